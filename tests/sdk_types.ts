// What a TypeScript user writes with the types openapi-typescript generates from the served
// document. tests/test_sdk.py writes those types to ./api.d.ts beside a copy of this file and
// compiles both with `tsc --noEmit --strict`: the uses must compile, and each line under an
// expect-error directive must not, or the types are looser than the API.
import type { components, paths } from "./api";

type Hero = components["schemas"]["HeroPublic"];
type ApiError = components["schemas"]["Error"];
type CreateHero = paths["/heroes"]["post"];
type NewHero = CreateHero["requestBody"]["content"]["application/json"];
type ListHeroes = paths["/heroes"]["get"];
type ListQuery = NonNullable<ListHeroes["parameters"]["query"]>;
type UpdateHero = paths["/heroes/{hero_id}"]["patch"];
type HeroChanges = NonNullable<UpdateHero["requestBody"]>["content"]["application/json"];

async function call<T>(url: string, init: RequestInit, expected: number): Promise<T> {
  const response = await fetch(url, {
    ...init,
    headers: { "content-type": "application/json" },
  });
  if (response.status !== expected) {
    const error: ApiError = await response.json();
    throw new Error(`${error.status_code} ${error.detail}`);
  }
  return (await response.json()) as T;
}

export function createHero(baseUrl: string, hero: NewHero): Promise<Hero> {
  return call<CreateHero["responses"][201]["content"]["application/json"]>(
    `${baseUrl}/heroes`,
    { method: "POST", body: JSON.stringify(hero) },
    201,
  );
}

export function listHeroes(baseUrl: string, query: ListQuery): Promise<Hero[]> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) params.set(key, String(value));
  }
  return call<ListHeroes["responses"][200]["content"]["application/json"]>(
    `${baseUrl}/heroes?${params}`,
    { method: "GET" },
    200,
  );
}

export function updateHero(baseUrl: string, heroId: number, changes: HeroChanges): Promise<Hero> {
  return call<UpdateHero["responses"][200]["content"]["application/json"]>(
    `${baseUrl}/heroes/${heroId}`,
    { method: "PATCH", body: JSON.stringify(changes) },
    200,
  );
}

export const deadpond: NewHero = { name: "Deadpond", secret_name: "Dive Wilson", age: 30 };
export const adults: ListQuery = { offset: 0, limit: 20, min_age: 18 };
export const clearAge: HeroChanges = { age: null };
export const rename: HeroChanges = { name: "Deadpool" };
export const ageOf = (hero: Hero): number | null => hero.age;

// @ts-expect-error a new hero needs a secret_name
export const noSecret: NewHero = { name: "Deadpond" };
// @ts-expect-error an age is a number or null, never a string
export const textAge: NewHero = { name: "Deadpond", secret_name: "Dive Wilson", age: "30" };
// @ts-expect-error no response carries the secret_name
export const leaked = (hero: Hero): string => hero.secret_name;

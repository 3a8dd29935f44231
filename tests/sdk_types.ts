// What a TypeScript user writes with the types openapi-typescript generates from the served
// document. tests/test_sdk.py writes those types to ./api.d.ts beside a copy of this file and
// compiles both with `tsc --noEmit --strict`: the uses must compile, and each line under an
// expect-error directive must not, or the types are looser than the API.
import type { components, paths } from "./api";

type Hero = components["schemas"]["HeroPublic"];
type ApiError = components["schemas"]["Error"];
type CreateHero = paths["/heroes"]["post"];
type NewHero = CreateHero["requestBody"]["content"]["application/json"];
type CreateHeaders = NonNullable<CreateHero["parameters"]["header"]>;
type ListHeroes = paths["/heroes"]["get"];
type ListQuery = NonNullable<ListHeroes["parameters"]["query"]>;
type ListHeaders = ListHeroes["responses"][200]["headers"];
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

// Every hero of a search, oldest first, following the Link header's next URL page by page.
export async function listAll(baseUrl: string, prefix: string): Promise<Hero[]> {
  const heroes: Hero[] = [];
  let url: string | null = `/heroes?${new URLSearchParams({ name_prefix: prefix, order_by: "-age" })}`;
  while (url !== null) {
    const response = await fetch(new URL(url, baseUrl));
    heroes.push(...((await response.json()) as Hero[]));
    const next = /^<([^>]+)>; rel="next"$/.exec(response.headers.get("Link") ?? "");
    url = next ? next[1] : null;
  }
  return heroes;
}

export const deadpond: NewHero = { name: "Deadpond", secret_name: "Dive Wilson", age: 30 };
export const adults: ListQuery = { offset: 0, limit: 20, min_age: 18 };
export const clearAge: HeroChanges = { age: null };
export const rename: HeroChanges = { name: "Deadpool" };
export const ageOf = (hero: Hero): number | null => hero.age;
export const oldestFirst: ListQuery = { order_by: "-age", name_prefix: "dead", count: true, limit: 20 };
export const nextPage: ListQuery = { order_by: "name", cursor: "WzEsIm5hbWUiLCJkZWFkcG9uZCIsMV0" };
export const changedAt = (hero: Hero): Date => new Date(hero.updated_at);
export const createdAt: string = ({} as Hero).created_at;
export const total: ListHeaders["X-Total-Count"] = 42;
export const link: ListHeaders["Link"] = '</heroes?cursor=abc>; rel="next"';
export const retryable: CreateHeaders = { "Idempotency-Key": "8e03978e-40d5-43e8-bc93-6894a57f9324" };
export const replayed: CreateHero["responses"][201]["headers"]["Idempotent-Replayed"] = "true";

// @ts-expect-error a new hero needs a secret_name
export const noSecret: NewHero = { name: "Deadpond" };
// @ts-expect-error an age is a number or null, never a string
export const textAge: NewHero = { name: "Deadpond", secret_name: "Dive Wilson", age: "30" };
// @ts-expect-error no response carries the secret_name
export const leaked = (hero: Hero): string => hero.secret_name;
// @ts-expect-error order_by is one of the documented orders
export const byHeight: ListQuery = { order_by: "height" };
// @ts-expect-error count is a boolean
export const countText: ListQuery = { count: "yes" };
// @ts-expect-error an Idempotency-Key is a string
export const numericKey: CreateHeaders = { "Idempotency-Key": 7 };

// Starts Scalar on the document named by the container's data-openapi-url, with nothing fetched
// from elsewhere: no web fonts from fonts.scalar.com, no telemetry, and neither the "Ask AI" agent
// nor the developer tools, which call Scalar's services (both shown by default on localhost).
const container = document.getElementById("scalar");
Scalar.createApiReference(container, {
  url: container.dataset.openapiUrl,
  withDefaultFonts: false,
  telemetry: false,
  agent: { disabled: true },
  showDeveloperTools: "never",
});

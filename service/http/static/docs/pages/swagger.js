// Starts Swagger UI on the document named by the container's data-openapi-url. A file of its own,
// not an inline script, so that the page's Content-Security-Policy can be script-src 'self'.
const container = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: container.dataset.openapiUrl,
  domNode: container,
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis],
  validatorUrl: null,
});

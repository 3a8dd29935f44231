// Starts ReDoc on the document named by the container's data-openapi-url.
const container = document.getElementById("redoc");
Redoc.init(container.dataset.openapiUrl, {}, container);

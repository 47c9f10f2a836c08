"""The gateway's REST/JSON edge: routes from ``google.api.http``, OpenAPI, the aiohttp server."""

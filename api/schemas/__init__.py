"""Wire types: request and response bodies, in the seeds' exact shapes, one module per resource. Never events.

`common` holds what every resource uses: `RequestBody`, the base of every request body, `MessageBody`, and
the schema plugin that says so in the OpenAPI schema; `errors` the error envelope.
"""

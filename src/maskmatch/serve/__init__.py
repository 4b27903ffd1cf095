"""`maskmatch serve`: a local web page and JSON API around `Recognizer`.

    from maskmatch.serve.app import create_app
    app = create_app(Recognizer.load("model.safetensors"))   # an ASGI app: run it with uvicorn

Modules: `app` (routes and the app factory), `limits` (body size, bounded inference pool), `inputs` (request
bodies to recognizer inputs; attention maps placed on the writer's canvas), `server` (uvicorn in a thread),
`load` (a bounded loopback load test), `commands` (the CLI). The page is in `static/`; KaTeX is vendored in
`katex/` (copied from the npm package that `web/` pins, by `make katex`).
"""

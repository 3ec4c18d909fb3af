"""The HTTP floor: a bare ASGI app (no framework) that reads the whole request body and
answers the same 11 bytes of JSON. What any Python server on this ASGI server costs at least."""

ANSWER = b'{"ok":true}'
HEAD = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())],
}
BODY = {"type": "http.response.body", "body": ANSWER}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send(HEAD)
    await send(BODY)

"""The OpenAPI document is how third parties integrate: complete and described."""


def test_openapi__every_operation_is_described(cloud):
    spec = cloud.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Nightlink cloud"
    ops = [(path, method, op) for path, item in spec["paths"].items()
           for method, op in item.items()]
    assert len(ops) > 30
    for path, method, op in ops:
        assert op.get("summary"), (method, path)
        # a summary from the docstring, not one FastAPI made from the function name
        assert op["summary"].endswith("."), (method, path, op["summary"])
        assert op.get("responses"), (method, path)
    paths = set(spec["paths"])
    for needed in ("/api/v1/entries", "/api/v1/entries/{spec}", "/api/v1/status",
                   "/api/v1/treatments", "/api/v2/properties", "/api/v3/{col}",
                   "/api/v3/{col}/history/{since}", "/api/nl/v1/auth/login", "/healthz",
                   "/readyz"):
        assert needed in paths, needed

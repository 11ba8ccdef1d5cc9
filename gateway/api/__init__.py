"""The HTTP edge: routers, request/response schemas and RFC 9457 problem documents. The only FastAPI code."""

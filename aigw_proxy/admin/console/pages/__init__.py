"""The console's pages, one module per area. A page is `async def ...(console, request, viewer) -> Response`;
app.py routes to it (admin-only pages answer a member 404) and checks a POST's CSRF token before it runs."""

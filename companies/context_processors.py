from .capabilities import pages_for


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_pages": []}
    return {"nav_pages": pages_for(user)}

"""The API's error body, one shape for every route, and the answers every route can give."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    """Every error body of the API has exactly these two fields."""

    error: str = Field(
        description="A stable code: invalid-request, invalid-target, refused, dns, forbidden, not-found, "
        "method-not-allowed, timeout, too-large, rate-limited, busy, internal."
    )
    message: str = Field(description="One sentence for a person.")


def error_answer(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


# Every route can answer these (the middleware's rate limit and error page).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    429: error_answer("Too many requests from this client (Retry-After)"),
    500: error_answer("An unexpected error (logged; no details are given)"),
}

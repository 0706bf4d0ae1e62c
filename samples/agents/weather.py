"""The weather data the agent samples' tool reads, and what their offline models say."""

from __future__ import annotations

__all__ = ["forecast_for", "last_word"]

_FORECASTS = {"paris": "sunny, 21 C", "london": "light rain, 14 C", "oslo": "snow, -3 C"}


def forecast_for(city: str) -> str:
    """Today's forecast for ``city`` (three cities know theirs)."""
    return _FORECASTS.get(city.lower(), f"no forecast for {city}")


def last_word(prompt: str) -> str:
    """The city an offline model asks about: the prompt's last word."""
    words = prompt.split()
    return words[-1].strip("?.!,") if words else ""

"""Testing support: throwaway servers, per-test isolation, and the pytest plugin."""

__all__: list[str] = []

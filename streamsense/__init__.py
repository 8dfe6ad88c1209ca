"""StreamSense: real-time sentiment and risk classification on Kafka streams."""

from pathlib import Path as _Path

__version__ = "0.1.0"


def _checkout_subpackages() -> None:
    """Installed (wheel or editable), `streamsense.streams`, `.models` and `.exporters` are found through the
    install. Run from a checkout that is not installed (`PYTHONPATH=.`, as on a machine without a package index),
    the folders `streams/`, `models/` and `exporters/` beside this one are those subpackages (pyproject.toml's
    package-dir): add the checkout to this package's search path so they resolve the same way."""
    here = _Path(__file__).resolve().parent
    checkout = here.parent
    if not (here / "streams").exists() and (checkout / "pyproject.toml").is_file() \
            and (checkout / "streams" / "__init__.py").is_file() and str(checkout) not in __path__:
        __path__.append(str(checkout))


_checkout_subpackages()

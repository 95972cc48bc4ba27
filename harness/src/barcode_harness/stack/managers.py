"""Which stack manager a set of settings gets (apart, so stack/manager.py and stack/ha.py need not
import each other)."""

from __future__ import annotations

from barcode_harness.settings import HarnessSettings, harness_settings
from barcode_harness.stack import secure as transport
from barcode_harness.stack.ha import HaStackManager
from barcode_harness.stack.manager import StackManager
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError


def manager_for(settings: HarnessSettings, *, monitoring: bool = False) -> StackManager:
    """The stack manager of ``settings.stack_profile``."""
    if settings.stack_profile != "ha":
        return StackManager(settings, monitoring=monitoring)
    if monitoring:
        raise ConfigError("--monitoring is not available with the ha profile yet")
    return HaStackManager(settings)


def secure_manager(settings: HarnessSettings, *, monitoring: bool = False) -> StackManager:
    """The single-node stack secured (stack/secure.py), its components holding the admin's settings."""
    if settings.stack_profile != "single":
        raise ConfigError("--secure: only the single profile can be secured yet")
    if monitoring:
        raise ConfigError("--monitoring is not available on a secured stack yet (its exporters need users)")
    secured = transport.secure_settings(settings)  # makes the files, too
    return StackManager(secured, secure=transport.SecureFiles.of(settings))


def ensure_up(product_settings: Settings) -> None:
    """Start the local stack of ``stack_profile`` if it is not running (idempotent): ``run``'s start-up
    hook. ``run`` holds the product's settings; the stack's own knobs are read here."""
    settings = harness_settings(product_settings)
    secured = transport.wanted(settings)
    if secured:
        transport.require_client_settings(settings)
    (secure_manager if secured else manager_for)(settings).up(quiet=True)

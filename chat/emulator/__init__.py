"""Emulator of the Genesys Cloud AI Gateway (plain ASGI, no Django). See app.py."""

from .app import EmulatorConfig, build_app
from .process import EmulatorProcess, start_emulator

__all__ = ["EmulatorConfig", "EmulatorProcess", "build_app", "start_emulator"]

"""Prefect flows: tasks wrap colorfeat stage functions, flows wire the tasks."""

from __future__ import annotations

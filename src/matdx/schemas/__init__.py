"""Pydantic models shared by every layer. No database or workflow-manager imports here."""

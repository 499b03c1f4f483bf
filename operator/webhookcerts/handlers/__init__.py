"""Thin Kopf glue: parse the body into pydantic, call one service function, return status."""

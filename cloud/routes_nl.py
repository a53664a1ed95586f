"""Placeholder router; filled in by its own module."""

from fastapi import APIRouter

router = APIRouter()

"""Tests of one module or adapter, no server."""

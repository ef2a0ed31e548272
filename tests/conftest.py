"""Test-suite root: its folder is on the import path, so helpers shared by several areas
(`kmock_support`) are importable from any test kit."""

"""The API an application's tests import: dbtool.supabase, and the import paths it had before."""

from __future__ import annotations

import importlib

import pytest

import dbtool
import dbtool.supabase


def test_supabase_declares_its_api() -> None:
    assert sorted(dbtool.supabase.__all__) == ["ChannelAccess", "Outcome", "Persona", "personas", "postgrest", "realtime"]
    for name in dbtool.supabase.__all__:
        assert getattr(dbtool.supabase, name) is not None


def test_old_import_paths_still_work() -> None:
    from dbtool import personas, postgrest, realtime

    assert postgrest is importlib.import_module("dbtool.supabase.postgrest")
    assert realtime is importlib.import_module("dbtool.supabase.realtime")
    assert personas.user("alice", "a11ce000-0000-4000-8000-000000000001").sub == "a11ce000-0000-4000-8000-000000000001"


def test_old_module_paths_are_the_same_modules() -> None:
    import dbtool.postgrest
    from dbtool.personas import Persona

    assert dbtool.postgrest is importlib.import_module("dbtool.supabase.postgrest")
    assert Persona is dbtool.supabase.Persona
    assert importlib.import_module("dbtool.realtime") is importlib.import_module("dbtool.supabase.realtime")


def test_unknown_names_are_still_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'world'"):
        dbtool.world  # noqa: B018

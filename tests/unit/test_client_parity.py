"""The blocking and asyncio clients offer the same calls: a read added to one is on both."""

from __future__ import annotations

import inspect

import secretcache_client
from secretcache_client import Client, _calls, aio
from secretcache_client.aio import AsyncClient

READ_NAMES = {read.__name__ for read in _calls.READS}
# The only differences allowed: the class, and closing (awaitable in asyncio).
SYNC_ONLY = {"Client", "close", "__enter__", "__exit__"}
ASYNC_ONLY = {"AsyncClient", "aclose", "__aenter__", "__aexit__"}


def public_names(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def test_both_modules_export_the_same_names() -> None:
    assert set(secretcache_client.__all__) - SYNC_ONLY == set(aio.__all__) - ASYNC_ONLY
    assert set(aio.__all__) >= READ_NAMES


def test_every_exported_name_exists() -> None:
    for module in (secretcache_client, aio):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], module.__name__


def test_both_clients_have_the_same_public_methods() -> None:
    sync_api = public_names(Client) | {"__enter__", "__exit__"}
    async_api = public_names(AsyncClient) | {"__aenter__", "__aexit__"}
    assert sync_api - SYNC_ONLY == async_api - ASYNC_ONLY
    assert sync_api >= READ_NAMES


def test_every_read_has_one_signature_on_both_clients() -> None:
    for read in _calls.READS:
        sync_method = getattr(Client(port=1), read.__name__)
        async_method = getattr(AsyncClient(port=1), read.__name__)
        signature = inspect.signature(sync_method)
        assert signature == inspect.signature(async_method), read.__name__
        # Binding drops the read's client parameter, not the caller's first argument.
        assert list(signature.parameters) == list(inspect.signature(read).parameters)[1:]
        assert signature.return_annotation is inspect.Signature.empty  # not the Call
        assert not inspect.iscoroutinefunction(sync_method), read.__name__
        assert inspect.iscoroutinefunction(async_method), read.__name__
        assert sync_method.__doc__ and sync_method.__doc__ == async_method.__doc__


def test_module_functions_are_the_default_clients_methods() -> None:
    for name in READ_NAMES:
        sync_function = getattr(secretcache_client, name)
        async_function = getattr(aio, name)
        assert sync_function.__self__ is secretcache_client.default_client, name
        assert async_function.__self__ is aio.default_client, name
        assert sync_function.__func__ is getattr(Client, name), name
        assert async_function.__func__ is getattr(AsyncClient, name), name


def test_both_clients_take_the_same_settings() -> None:
    assert inspect.signature(Client) == inspect.signature(AsyncClient)
    for cls in (Client, AsyncClient):
        client = cls(port=2773, token="t", timeout=1.5, retries=2, max_idle_connections=1)
        assert repr(client) == f"{cls.__name__}(port=2773, timeout=1.5, retries=2)"

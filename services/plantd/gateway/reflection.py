"""The descriptor pool server reflection answers from: the default one, plus method symbols.

grpcurl, Postman and grpcui resolve ``describe plantd.v1.StateService.GetEntry`` with
``file_containing_symbol`` on the method's full name. Python protobuf's pool (upb) finds the
files of services, messages, enums and fields, but not of methods, so against any Python
server that answer is NOT_FOUND. This wrapper looks the service up instead and returns its
file; everything else is the default pool's.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor


class MethodAwarePool:
    """A descriptor pool that also finds the file of ``package.Service.Method``."""

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool if pool is not None else descriptor_pool.Default()

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            found: FileDescriptor = self._pool.FindFileContainingSymbol(symbol)
            return found
        except KeyError:
            service, _, method = symbol.rpartition(".")
            try:
                owner = self._pool.FindServiceByName(service) if service else None
            except KeyError:
                owner = None
            if owner is not None and method in owner.methods_by_name:
                file: FileDescriptor = owner.file
                return file
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

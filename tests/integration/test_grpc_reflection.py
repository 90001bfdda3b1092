"""Standard gRPC services next to Remit: reflection lists and describes the API."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from remit_service import Server


def test_reflection_lists_and_describes_remit(service: Server) -> None:
    with grpc.insecure_channel(service.grpc_target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"remit.v1.Remit", "grpc.health.v1.Health"} <= services
        remit_file = db.FindFileContainingSymbol("remit.v1.Remit")
        service_proto = next(s for s in remit_file.service if s.name == "Remit")
        methods = {m.name for m in service_proto.method}
    assert methods == {
        "CreateGrant", "GetGrant", "ListGrants", "Mint", "Revoke", "GetKeys", "GetAlignment",
        "Exchange", "Describe", "Introspect",
    }

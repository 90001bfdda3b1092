from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Capability(_message.Message):
    __slots__ = ("action", "args_json", "limits_json")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMITS_JSON_FIELD_NUMBER: _ClassVar[int]
    action: str
    args_json: str
    limits_json: str
    def __init__(self, action: _Optional[str] = ..., args_json: _Optional[str] = ..., limits_json: _Optional[str] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("id", "app", "subject", "agent", "audience", "capabilities", "purpose", "created_at", "expires_at", "revoked")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    id: str
    app: str
    subject: str
    agent: str
    audience: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    purpose: str
    created_at: int
    expires_at: int
    revoked: bool
    def __init__(self, id: _Optional[str] = ..., app: _Optional[str] = ..., subject: _Optional[str] = ..., agent: _Optional[str] = ..., audience: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ..., purpose: _Optional[str] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., revoked: _Optional[bool] = ...) -> None: ...

class CreateGrantRequest(_message.Message):
    __slots__ = ("subject", "agent", "audience", "capabilities", "purpose", "ttl_seconds")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    subject: str
    agent: str
    audience: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    purpose: str
    ttl_seconds: int
    def __init__(self, subject: _Optional[str] = ..., agent: _Optional[str] = ..., audience: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ..., purpose: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class GetGrantRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("subject", "agent", "include_inactive", "page_size", "page_token")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subject: str
    agent: str
    include_inactive: bool
    page_size: int
    page_token: str
    def __init__(self, subject: _Optional[str] = ..., agent: _Optional[str] = ..., include_inactive: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants", "next_page_token")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    next_page_token: str
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MintRequest(_message.Message):
    __slots__ = ("grant_id", "capabilities", "ttl_seconds", "audience", "cnf_jkt")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    CNF_JKT_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    ttl_seconds: int
    audience: _containers.RepeatedScalarFieldContainer[str]
    cnf_jkt: str
    def __init__(self, grant_id: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ..., ttl_seconds: _Optional[int] = ..., audience: _Optional[_Iterable[str]] = ..., cnf_jkt: _Optional[str] = ...) -> None: ...

class MintResponse(_message.Message):
    __slots__ = ("token", "jti", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    jti: str
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., jti: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("jti", "grant_id", "agent", "subject", "all", "reason", "before")
    JTI_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    jti: str
    grant_id: str
    agent: str
    subject: str
    all: bool
    reason: str
    before: int
    def __init__(self, jti: _Optional[str] = ..., grant_id: _Optional[str] = ..., agent: _Optional[str] = ..., subject: _Optional[str] = ..., all: _Optional[bool] = ..., reason: _Optional[str] = ..., before: _Optional[int] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("revoked_at", "grants", "cutoff")
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_FIELD_NUMBER: _ClassVar[int]
    revoked_at: int
    grants: int
    cutoff: int
    def __init__(self, revoked_at: _Optional[int] = ..., grants: _Optional[int] = ..., cutoff: _Optional[int] = ...) -> None: ...

class GetKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetKeysResponse(_message.Message):
    __slots__ = ("jwks_json", "issuer")
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    issuer: str
    def __init__(self, jwks_json: _Optional[str] = ..., issuer: _Optional[str] = ...) -> None: ...

class GetAlignmentRequest(_message.Message):
    __slots__ = ("grant_id", "agent", "subject", "since_ms")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    agent: str
    subject: str
    since_ms: int
    def __init__(self, grant_id: _Optional[str] = ..., agent: _Optional[str] = ..., subject: _Optional[str] = ..., since_ms: _Optional[int] = ...) -> None: ...

class GetAlignmentResponse(_message.Message):
    __slots__ = ("report_json",)
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    report_json: str
    def __init__(self, report_json: _Optional[str] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("token", "proof", "capabilities", "ttl_seconds", "audience", "actor", "cnf_jkt")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CNF_JKT_FIELD_NUMBER: _ClassVar[int]
    token: str
    proof: str
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    ttl_seconds: int
    audience: _containers.RepeatedScalarFieldContainer[str]
    actor: str
    cnf_jkt: str
    def __init__(self, token: _Optional[str] = ..., proof: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ..., ttl_seconds: _Optional[int] = ..., audience: _Optional[_Iterable[str]] = ..., actor: _Optional[str] = ..., cnf_jkt: _Optional[str] = ...) -> None: ...

class ExchangeResponse(_message.Message):
    __slots__ = ("token", "jti", "expires_at", "depth")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    token: str
    jti: str
    expires_at: int
    depth: int
    def __init__(self, token: _Optional[str] = ..., jti: _Optional[str] = ..., expires_at: _Optional[int] = ..., depth: _Optional[int] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("grant_id", "capabilities")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    def __init__(self, grant_id: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("text", "capabilities", "risk")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    text: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    risk: str
    def __init__(self, text: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., risk: _Optional[str] = ...) -> None: ...

class IntrospectRequest(_message.Message):
    __slots__ = ("token", "audience", "action", "args_json", "proof")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    token: str
    audience: str
    action: str
    args_json: str
    proof: str
    def __init__(self, token: _Optional[str] = ..., audience: _Optional[str] = ..., action: _Optional[str] = ..., args_json: _Optional[str] = ..., proof: _Optional[str] = ...) -> None: ...

class IntrospectResponse(_message.Message):
    __slots__ = ("allowed", "code", "message", "grant_id", "jti", "subject", "agent", "expires_at", "anc", "capability")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ANC_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    code: str
    message: str
    grant_id: str
    jti: str
    subject: str
    agent: str
    expires_at: int
    anc: _containers.RepeatedScalarFieldContainer[str]
    capability: int
    def __init__(self, allowed: _Optional[bool] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., grant_id: _Optional[str] = ..., jti: _Optional[str] = ..., subject: _Optional[str] = ..., agent: _Optional[str] = ..., expires_at: _Optional[int] = ..., anc: _Optional[_Iterable[str]] = ..., capability: _Optional[int] = ...) -> None: ...

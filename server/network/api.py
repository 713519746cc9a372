"""GraphQL for organisations, locations and users: types, queries and mutations."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Self

import strawberry
from sqlalchemy import or_, select
from strawberry import relay

from server.core.graphql import (
    CountedConnection,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_nodes,
    load_related,
    paginate,
    parse_pks,
    related,
)
from server.core.security import Permission, Role
from server.core.validation import LIKE_ESCAPE, like_pattern
from server.network import models

OrganisationKind = strawberry.enum(models.OrganisationKind)
LocationKind = strawberry.enum(models.LocationKind)
RoleEnum = strawberry.enum(Role, name="Role")


@strawberry.type
class Organisation(relay.Node):
    id: relay.NodeID[int]
    name: str
    kind: OrganisationKind  # type: ignore[valid-type]
    gln: str | None

    @classmethod
    def from_model(cls, org: models.Organisation) -> Self:
        return cls(id=org.id, name=org.name, kind=org.kind, gln=org.gln)

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Organisation, node_ids, cls.from_model)

    @strawberry.field
    async def locations(self, info: Info) -> list[Location]:
        rows = await info.context.grouped(
            "locations_by_org", models.Location.organisation_id, models.Location.code
        ).load(self.id)
        return [Location.from_model(r) for r in rows]


@strawberry.type
class Location(relay.Node):
    id: relay.NodeID[int]
    code: str
    name: str
    kind: LocationKind  # type: ignore[valid-type]
    allow_negative_stock: bool
    active: bool
    organisation_id: strawberry.Private[int]
    parent_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, loc: models.Location) -> Self:
        return cls(
            id=loc.id,
            code=loc.code,
            name=loc.name,
            kind=loc.kind,
            allow_negative_stock=loc.allow_negative_stock,
            active=loc.active,
            organisation_id=loc.organisation_id,
            parent_id=loc.parent_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Location, node_ids, cls.from_model)

    @strawberry.field
    def organisation(self, info: Info) -> Organisation:
        return related(info, models.Organisation, self.organisation_id, Organisation.from_model)

    @strawberry.field
    def parent(self, info: Info) -> Location | None:
        return related(info, models.Location, self.parent_id, Location.from_model)

    @strawberry.field(description="Whether the signed-in user may see and move stock here.")
    def in_my_scope(self, info: Info) -> bool:
        return info.context.require_principal().sees_location(self.id)


@strawberry.type
class User(relay.Node):
    id: relay.NodeID[int]
    username: str
    full_name: str
    active: bool
    organisation_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, user: models.User) -> Self:
        return cls(
            id=user.id,
            username=user.username,
            full_name=user.full_name,
            active=user.active,
            organisation_id=user.organisation_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        principal = info.context.require_principal()
        if any(pk != principal.user_id for pk in parse_pks(node_ids)):
            principal.require(Permission.USERS_MANAGE)
        return await load_nodes(info, models.User, node_ids, cls.from_model)

    @strawberry.field
    async def roles(self, info: Info) -> list[RoleEnum]:  # type: ignore[valid-type]
        rows = await info.context.grouped("roles_by_user", models.UserRole.user_id).load(self.id)
        return sorted(r.role for r in rows)

    @strawberry.field(description="Explicit location scope; empty means the whole organisation.")
    async def locations(self, info: Info) -> list[Location]:
        links = await info.context.grouped("locations_by_user", models.UserLocation.user_id).load(
            self.id
        )
        rows = await info.context.by_id(models.Location).load_many([x.location_id for x in links])
        return [Location.from_model(r) for r in rows if r]

    @strawberry.field
    async def organisation(self, info: Info) -> Organisation | None:
        return await load_related(
            info, models.Organisation, self.organisation_id, Organisation.from_model
        )


@strawberry.type(
    description="A third party's system acting for one organisation with OAuth2 client "
    "credentials. Administrators only.",
)
class OAuthClient(relay.Node):
    id: relay.NodeID[int]
    client_id: str
    name: str
    role: RoleEnum  # type: ignore[valid-type]
    scopes: list[str]
    created_at: datetime
    secret_rotated_at: datetime | None
    previous_secret_valid_until: datetime | None = strawberry.field(
        description="Until when the secret replaced by the last rotation still works."
    )
    revoked_at: datetime | None
    organisation_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, client: models.OAuthClient) -> Self:
        return cls(
            id=client.id,
            client_id=client.client_id,
            name=client.name,
            role=client.role,
            scopes=client.scopes.split(),
            created_at=client.created_at,
            secret_rotated_at=client.secret_rotated_at,
            previous_secret_valid_until=client.previous_secret_expires_at,
            revoked_at=client.revoked_at,
            organisation_id=client.organisation_id,
        )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(
            info, models.OAuthClient, node_ids, cls.from_model, permission=Permission.USERS_MANAGE
        )

    @strawberry.field
    def organisation(self, info: Info) -> Organisation:
        return related(info, models.Organisation, self.organisation_id, Organisation.from_model)


@strawberry.type
class OAuthClientConnection(CountedConnection[OAuthClient]):
    pass


@strawberry.type
class OAuthClientQuery:
    @strawberry.field(name="oauthClients", description="Administrators only.")
    async def oauth_clients(
        self, info: Info, first: int, after: str | None = None
    ) -> OAuthClientConnection:
        info.context.require_principal().require(Permission.USERS_MANAGE)
        page = await paginate(
            info,
            select(models.OAuthClient),
            keys=[models.OAuthClient.id],
            first=first,
            after=after,
            key_of=lambda r: [r.id],
        )
        return connection(OAuthClientConnection, page, OAuthClient.from_model)


@strawberry.input
class CreateOAuthClientInput:
    name: str
    organisation: relay.GlobalID
    role: RoleEnum  # type: ignore[valid-type]
    scopes: list[str] = strawberry.field(
        description="e.g. shipments:write; each must open something the role may do."
    )


@strawberry.input
class RotateOAuthClientSecretInput:
    id: relay.GlobalID


@strawberry.input
class RevokeOAuthClientInput:
    id: relay.GlobalID


@strawberry.type
class OAuthClientSecretPayload:
    client: OAuthClient | None = None
    client_secret: str | None = strawberry.field(
        default=None, description="Shown this once; only its hash is kept."
    )
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class OAuthClientPayload:
    client: OAuthClient | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class OAuthClientMutation:
    @strawberry.mutation(name="createOAuthClient")
    async def create_oauth_client(
        self, info: Info, input: CreateOAuthClientInput
    ) -> OAuthClientSecretPayload:
        made, errors = await attempt(
            info,
            lambda p: info.context.services.clients.create_client(
                p,
                name=input.name,
                organisation_id=decode_id(input.organisation, Organisation, "organisation"),
                role=input.role,
                scopes=input.scopes,
            ),
        )
        return _secret_payload(made, errors)

    @strawberry.mutation(
        name="rotateOAuthClientSecret",
        description="A new secret; the old one keeps working for the configured overlap.",
    )
    async def rotate_oauth_client_secret(
        self, info: Info, input: RotateOAuthClientSecretInput
    ) -> OAuthClientSecretPayload:
        made, errors = await attempt(
            info,
            lambda p: info.context.services.clients.rotate_secret(
                p, decode_id(input.id, OAuthClient, "id")
            ),
        )
        return _secret_payload(made, errors)

    @strawberry.mutation(
        name="revokeOAuthClient",
        description="Final: no new tokens, and issued ones stop working at once.",
    )
    async def revoke_oauth_client(
        self, info: Info, input: RevokeOAuthClientInput
    ) -> OAuthClientPayload:
        client, errors = await attempt(
            info,
            lambda p: info.context.services.clients.revoke_client(
                p, decode_id(input.id, OAuthClient, "id")
            ),
        )
        return OAuthClientPayload(client=client and OAuthClient.from_model(client), errors=errors)


def _secret_payload(made: Any, errors: list[MutationError]) -> OAuthClientSecretPayload:
    if made is None:
        return OAuthClientSecretPayload(errors=errors)
    return OAuthClientSecretPayload(
        client=OAuthClient.from_model(made.client), client_secret=made.secret, errors=errors
    )


@strawberry.type
class OrganisationConnection(CountedConnection[Organisation]):
    pass


@strawberry.type
class LocationConnection(CountedConnection[Location]):
    pass


@strawberry.type
class UserConnection(CountedConnection[User]):
    pass


@strawberry.type
class Query(OAuthClientQuery):
    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Info) -> User:
        principal = info.context.require_principal()
        return User.from_model(await info.context.by_id(models.User).load(principal.user_id))

    @strawberry.field
    async def organisations(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        kind: OrganisationKind | None = None,  # type: ignore[valid-type]
    ) -> OrganisationConnection:
        info.context.require_principal().require(Permission.NETWORK_READ)
        stmt = select(models.Organisation)
        if kind is not None:
            stmt = stmt.where(models.Organisation.kind == kind)
        page = await paginate(
            info,
            stmt,
            keys=[models.Organisation.id],
            first=first,
            after=after,
            key_of=lambda r: [r.id],
        )
        return connection(OrganisationConnection, page, Organisation.from_model)

    @strawberry.field
    async def locations(
        self,
        info: Info,
        first: int,
        after: str | None = None,
        organisation: relay.GlobalID | None = None,
        kind: LocationKind | None = None,  # type: ignore[valid-type]
        search: str | None = None,
        mine: bool = False,
    ) -> LocationConnection:
        principal = info.context.require_principal()
        principal.require(Permission.NETWORK_READ)
        stmt = select(models.Location)
        if organisation is not None:
            org_id = decode_id(organisation, Organisation, "organisation")
            stmt = stmt.where(models.Location.organisation_id == org_id)
        if kind is not None:
            stmt = stmt.where(models.Location.kind == kind)
        if search:
            pattern = like_pattern(search.lower())
            stmt = stmt.where(
                or_(
                    models.Location.code.ilike(pattern, escape=LIKE_ESCAPE),
                    models.Location.name.ilike(pattern, escape=LIKE_ESCAPE),
                )
            )
        if mine and principal.location_ids is not None:
            stmt = stmt.where(models.Location.id.in_(principal.location_ids))
        page = await paginate(
            info,
            stmt,
            keys=[models.Location.id],
            first=first,
            after=after,
            key_of=lambda r: [r.id],
        )
        return connection(LocationConnection, page, Location.from_model)

    @strawberry.field(description="Administrators only.")
    async def users(self, info: Info, first: int, after: str | None = None) -> UserConnection:
        info.context.require_principal().require(Permission.USERS_MANAGE)
        clients = select(models.OAuthClient.user_id)  # their service accounts are not people
        page = await paginate(
            info,
            select(models.User).where(models.User.id.not_in(clients)),
            keys=[models.User.id],
            first=first,
            after=after,
            key_of=lambda r: [r.id],
        )
        return connection(UserConnection, page, User.from_model)


# --- mutations -------------------------------------------------------------------------------


@strawberry.input
class CreateOrganisationInput:
    name: str
    kind: OrganisationKind  # type: ignore[valid-type]
    gln: str | None = None


@strawberry.input
class UpdateOrganisationInput:
    id: relay.GlobalID
    name: str | None = None
    kind: OrganisationKind | None = None  # type: ignore[valid-type]
    gln: str | None = None


@strawberry.type
class OrganisationPayload:
    organisation: Organisation | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.input
class CreateLocationInput:
    organisation: relay.GlobalID
    code: str
    name: str
    kind: LocationKind  # type: ignore[valid-type]
    parent: relay.GlobalID | None = None
    allow_negative_stock: bool = False


@strawberry.input
class UpdateLocationInput:
    id: relay.GlobalID
    code: str | None = None
    name: str | None = None
    kind: LocationKind | None = None  # type: ignore[valid-type]
    parent: relay.GlobalID | None = None
    allow_negative_stock: bool | None = None
    active: bool | None = None


@strawberry.type
class LocationPayload:
    location: Location | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.input
class CreateUserInput:
    username: str
    full_name: str
    password: str
    roles: list[RoleEnum]  # type: ignore[valid-type]
    organisation: relay.GlobalID | None = None
    locations: list[relay.GlobalID] = strawberry.field(default_factory=list)


@strawberry.input
class UpdateUserInput:
    id: relay.GlobalID
    full_name: str | None = None
    password: str | None = None
    roles: list[RoleEnum] | None = None  # type: ignore[valid-type]
    organisation: relay.GlobalID | None = None
    locations: list[relay.GlobalID] | None = None
    active: bool | None = None


@strawberry.type
class UserPayload:
    user: User | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


async def username_of(info: Info, user_id: int | None) -> str | None:
    """Who did it, for the `…By` fields of every domain: batched through the request's loader."""
    return await load_related(info, models.User, user_id, lambda user: user.username)


def _optional_id(value: relay.GlobalID | None, node_type: type, field: str) -> int | None:
    return None if value is None else decode_id(value, node_type, field)


@strawberry.type
class Mutation(OAuthClientMutation):
    @strawberry.mutation
    async def create_organisation(
        self, info: Info, input: CreateOrganisationInput
    ) -> OrganisationPayload:
        org, errors = await attempt(
            info,
            lambda p: info.context.services.network.create_organisation(
                p, name=input.name, kind=input.kind, gln=input.gln
            ),
        )
        return OrganisationPayload(organisation=org and Organisation.from_model(org), errors=errors)

    @strawberry.mutation
    async def update_organisation(
        self, info: Info, input: UpdateOrganisationInput
    ) -> OrganisationPayload:
        org, errors = await attempt(
            info,
            lambda p: info.context.services.network.update_organisation(
                p,
                decode_id(input.id, Organisation, "id"),
                name=input.name,
                kind=input.kind,
                gln=input.gln,
            ),
        )
        return OrganisationPayload(organisation=org and Organisation.from_model(org), errors=errors)

    @strawberry.mutation
    async def create_location(self, info: Info, input: CreateLocationInput) -> LocationPayload:
        loc, errors = await attempt(
            info,
            lambda p: info.context.services.network.create_location(
                p,
                organisation_id=decode_id(input.organisation, Organisation, "organisation"),
                code=input.code,
                name=input.name,
                kind=input.kind,
                parent_id=_optional_id(input.parent, Location, "parent"),
                allow_negative_stock=input.allow_negative_stock,
            ),
        )
        return LocationPayload(location=loc and Location.from_model(loc), errors=errors)

    @strawberry.mutation
    async def update_location(self, info: Info, input: UpdateLocationInput) -> LocationPayload:
        loc, errors = await attempt(
            info,
            lambda p: info.context.services.network.update_location(
                p,
                decode_id(input.id, Location, "id"),
                code=input.code,
                name=input.name,
                kind=input.kind,
                parent_id=_optional_id(input.parent, Location, "parent"),
                allow_negative_stock=input.allow_negative_stock,
                active=input.active,
            ),
        )
        return LocationPayload(location=loc and Location.from_model(loc), errors=errors)

    @strawberry.mutation
    async def create_user(self, info: Info, input: CreateUserInput) -> UserPayload:
        user, errors = await attempt(
            info,
            lambda p: info.context.services.network.create_user(
                p,
                username=input.username,
                full_name=input.full_name,
                password=input.password,
                roles=input.roles,
                organisation_id=_optional_id(input.organisation, Organisation, "organisation"),
                location_ids=[decode_id(x, Location, "locations") for x in input.locations],
            ),
        )
        return UserPayload(user=user and User.from_model(user), errors=errors)

    @strawberry.mutation
    async def update_user(self, info: Info, input: UpdateUserInput) -> UserPayload:
        locations = input.locations
        user, errors = await attempt(
            info,
            lambda p: info.context.services.network.update_user(
                p,
                decode_id(input.id, User, "id"),
                full_name=input.full_name,
                password=input.password,
                roles=input.roles,
                organisation_id=_optional_id(input.organisation, Organisation, "organisation"),
                location_ids=None
                if locations is None
                else [decode_id(x, Location, "locations") for x in locations],
                active=input.active,
            ),
        )
        return UserPayload(user=user and User.from_model(user), errors=errors)

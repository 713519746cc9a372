"""GraphQL for organisations, locations, users and OAuth clients: types, queries, mutations.

`User` is the type every domain's `*By` field points at (through `relation(models.User, ...)`):
anyone signed in sees a person's username and full name; their account's state, roles, scope
and organisation only they themself and administrators (server/network/rules.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Self

import strawberry
from strawberry import relay

from server.core.graphql import (
    CountedConnection,
    FromModel,
    Info,
    MutationError,
    attempt,
    connection,
    decode_id,
    load_nodes,
    load_related,
    optional_id,
    parse_pks,
    relation,
)
from server.core.graphql_enums import described_enum
from server.core.security import Permission, Role
from server.network import models
from server.network.rules import require_user_details

OrganisationKind = described_enum(
    models.OrganisationKind,
    "What an organisation does in the supply chain.",
    {
        "MANUFACTURER": "Produces medicines: the only source of a batch's input.",
        "WHOLESALER": "Distributes to hospitals and pharmacies.",
        "HOSPITAL": "Dispenses to patients on its wards.",
        "PHARMACY": "Dispenses to patients.",
        "SUPPLIER": "Sells to the organisations it supplies; sees only its own orders.",
        "REGULATOR": "Supervises the network.",
    },
)
LocationKind = described_enum(
    models.LocationKind,
    "What a location is used for.",
    {
        "WAREHOUSE": "Bulk storage.",
        "PHARMACY": "A pharmacy's dispensary and stock.",
        "WARD": "A hospital ward (a nurse's scope).",
        "CLINIC": "An outpatient clinic.",
        "QUARANTINE": "Stock held back from use.",
    },
)
RoleEnum = described_enum(
    Role,
    "What a user or client may do.",
    {
        "ADMIN": "Everything, everywhere, including users and clients.",
        "PHARMACIST": "Stock, transfers, counts and recalls in their organisation or scope.",
        "WAREHOUSE_MANAGER": "Stock, receiving, transfers and counts in their scope.",
        "NURSE": "Dispenses and returns on their wards.",
        "SUPPLIER": "Its own purchase orders and shipments.",
        "AUDITOR": "Reads everything, writes nothing.",
        "REGULATOR": "Supervision, traces and recalls across organisations.",
    },
    name="Role",
)

First = Annotated[int, strawberry.argument(description="Page size (1 to the configured cap).")]
After = Annotated[
    str | None, strawberry.argument(description="A cursor: the page starts after it.")
]


@strawberry.type(description="A company or institution in the network.")
class Organisation(FromModel, relay.Node):
    id: relay.NodeID[int]
    name: str = strawberry.field(description="Unique name.")
    kind: OrganisationKind = strawberry.field(description="Its role in the chain.")  # type: ignore[valid-type]
    gln: str | None = strawberry.field(description="GS1 Global Location Number (13 digits).")
    currency: str = strawberry.field(
        description="ISO 4217 code of every amount the organisation keeps (costs, budgets)."
    )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Organisation, node_ids, cls.from_model)

    @strawberry.field(description="Its locations, by code.")
    async def locations(self, info: Info) -> list[Location]:
        rows = await info.context.grouped(
            "locations_by_org", models.Location.organisation_id, models.Location.code
        ).load(self.id)
        return [Location.from_model(r) for r in rows]


@strawberry.type(description="A place that holds stock: a warehouse, pharmacy, ward...")
class Location(FromModel, relay.Node):
    id: relay.NodeID[int]
    code: str = strawberry.field(description="Unique short code, e.g. WARD-A.")
    name: str = strawberry.field(description="Display name.")
    kind: LocationKind = strawberry.field(description="What it is used for.")  # type: ignore[valid-type]
    allow_negative_stock: bool = strawberry.field(
        description="Whether balances here may go below zero."
    )
    active: bool = strawberry.field(description="Inactive locations take no new movements.")
    organisation_id: strawberry.Private[int]
    parent_id: strawberry.Private[int | None]

    organisation: Organisation = relation(
        models.Organisation, "organisation_id", description="Whose location it is."
    )
    parent: Location | None = relation(
        models.Location, "parent_id", description="The location it sits in; null at the top."
    )

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info, models.Location, node_ids, cls.from_model)

    @strawberry.field(description="Whether the signed-in user may see and move stock here.")
    def in_my_scope(self, info: Info) -> bool:
        return info.context.require_principal().sees_location(self.id)


@strawberry.type(
    description="A person who signs in. Anyone signed in sees a user's username and full "
    "name (who did something); the other fields are for the user themself and administrators "
    "(FORBIDDEN otherwise)."
)
class User(FromModel, relay.Node):
    __columns__ = {"account_active": "active"}

    id: relay.NodeID[int]
    username: str = strawberry.field(description="Unique sign-in name.")
    full_name: str = strawberry.field(description="The name to show.")
    account_active: strawberry.Private[bool]
    organisation_id: strawberry.Private[int | None]

    @classmethod
    async def resolve_nodes(
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        principal = info.context.require_principal()
        if any(pk != principal.user_id for pk in parse_pks(node_ids)):
            principal.require(Permission.USERS_MANAGE)
        return await load_nodes(info, models.User, node_ids, cls.from_model)

    def _details(self, info: Info) -> None:
        require_user_details(info.context.require_principal(), self.id)

    @strawberry.field(description="False once disabled: no sign-in, sessions ended.")
    def active(self, info: Info) -> bool:
        self._details(info)
        return self.account_active

    @strawberry.field(description="What the user may do.")
    async def roles(self, info: Info) -> list[RoleEnum]:  # type: ignore[valid-type]
        self._details(info)
        rows = await info.context.grouped("roles_by_user", models.UserRole.user_id).load(self.id)
        return sorted(r.role for r in rows)

    @strawberry.field(description="Explicit location scope; empty means the whole organisation.")
    async def locations(self, info: Info) -> list[Location]:
        self._details(info)
        links = await info.context.grouped("locations_by_user", models.UserLocation.user_id).load(
            self.id
        )
        rows = await info.context.by_id(models.Location).load_many([x.location_id for x in links])
        return [Location.from_model(r) for r in rows if r]

    @strawberry.field(description="Whom the user works for; null for network-wide staff.")
    async def organisation(self, info: Info) -> Organisation | None:
        self._details(info)
        return await load_related(
            info, models.Organisation, self.organisation_id, Organisation.from_model
        )


@strawberry.type(
    description="A third party's system acting for one organisation with OAuth2 client "
    "credentials. Administrators only.",
)
class OAuthClient(relay.Node):
    id: relay.NodeID[int]
    client_id: str = strawberry.field(description="The client_id it signs in with.")
    name: str = strawberry.field(description="Display name.")
    role: RoleEnum = strawberry.field(description="The role its tokens act with.")  # type: ignore[valid-type]
    scopes: list[str] = strawberry.field(description="What its tokens may do, e.g. stock:read.")
    created_at: datetime = strawberry.field(description="When it was created.")
    secret_rotated_at: datetime | None = strawberry.field(
        description="When its secret was last rotated; null: never."
    )
    previous_secret_valid_until: datetime | None = strawberry.field(
        description="Until when the secret replaced by the last rotation still works."
    )
    revoked_at: datetime | None = strawberry.field(
        description="When it was revoked (final); null while it works."
    )
    organisation_id: strawberry.Private[int]

    organisation: Organisation = relation(
        models.Organisation, "organisation_id", description="The organisation it acts for."
    )

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


@strawberry.type(description="A page of OAuth clients.")
class OAuthClientConnection(CountedConnection[OAuthClient]):
    pass


@strawberry.type(description="A page of organisations.")
class OrganisationConnection(CountedConnection[Organisation]):
    pass


@strawberry.type(description="A page of locations.")
class LocationConnection(CountedConnection[Location]):
    pass


@strawberry.type(description="A page of users.")
class UserConnection(CountedConnection[User]):
    pass


# --- queries ---------------------------------------------------------------------------------


@strawberry.type
class OAuthClientQuery:
    @strawberry.field(
        name="oauthClients",
        description="Every OAuth client, revoked ones too, in creation order. Administrators only.",
    )
    async def oauth_clients(
        self, info: Info, first: First, after: After = None
    ) -> OAuthClientConnection:
        page = await info.context.services.clients.clients_page(
            info.context.require_principal(),
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(OAuthClientConnection, page, OAuthClient.from_model)  # type: ignore[return-value]


@strawberry.type
class Query(OAuthClientQuery):
    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Info) -> User:
        principal = info.context.require_principal()
        return User.from_model(await info.context.by_id(models.User).load(principal.user_id))

    @strawberry.field(description="Organisations in creation order. Anyone who reads the network.")
    async def organisations(
        self,
        info: Info,
        first: First,
        after: After = None,
        kind: Annotated[
            OrganisationKind | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only organisations of this kind."),
        ] = None,
    ) -> OrganisationConnection:
        page = await info.context.services.network.organisations_page(
            info.context.require_principal(),
            kind=kind,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(OrganisationConnection, page, Organisation.from_model)  # type: ignore[return-value]

    @strawberry.field(description="Locations in creation order. Anyone who reads the network.")
    async def locations(
        self,
        info: Info,
        first: First,
        after: After = None,
        organisation: Annotated[
            relay.GlobalID | None,
            strawberry.argument(description="Only this organisation's locations."),
        ] = None,
        kind: Annotated[
            LocationKind | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only locations of this kind."),
        ] = None,
        search: Annotated[
            str | None,
            strawberry.argument(description="Only those whose code or name contains it (any case)"),
        ] = None,
        mine: Annotated[
            bool,
            strawberry.argument(description="Only locations in your scope."),
        ] = False,
    ) -> LocationConnection:
        page = await info.context.services.network.locations_page(
            info.context.require_principal(),
            organisation_id=None
            if organisation is None
            else decode_id(organisation, Organisation, "organisation"),
            kind=kind,
            search=search,
            mine=mine,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(LocationConnection, page, Location.from_model)  # type: ignore[return-value]

    @strawberry.field(
        description="People in creation order (not OAuth clients' accounts). Administrators only."
    )
    async def users(self, info: Info, first: First, after: After = None) -> UserConnection:
        page = await info.context.services.network.users_page(
            info.context.require_principal(),
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
        )
        return connection(UserConnection, page, User.from_model)  # type: ignore[return-value]


# --- mutations -------------------------------------------------------------------------------


@strawberry.input(description="A new OAuth client.")
class CreateOAuthClientInput:
    name: str = strawberry.field(description="Display name.")
    organisation: relay.GlobalID = strawberry.field(description="The organisation it acts for.")
    role: RoleEnum = strawberry.field(description="The role its tokens act with.")  # type: ignore[valid-type]
    scopes: list[str] = strawberry.field(
        description="e.g. shipments:write; each must open something the role may do."
    )


@strawberry.input(description="Which client's secret to rotate.")
class RotateOAuthClientSecretInput:
    id: relay.GlobalID = strawberry.field(description="The client (an OAuthClient ID).")


@strawberry.input(description="Which client to revoke.")
class RevokeOAuthClientInput:
    id: relay.GlobalID = strawberry.field(description="The client (an OAuthClient ID).")


@strawberry.type(description="A client and its new secret.")
class OAuthClientSecretPayload:
    client: OAuthClient | None = strawberry.field(
        default=None, description="The client; null when refused."
    )
    client_secret: str | None = strawberry.field(
        default=None, description="Shown this once; only its hash is kept."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type(description="The result of a change to a client.")
class OAuthClientPayload:
    client: OAuthClient | None = strawberry.field(
        default=None, description="The client; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.type
class OAuthClientMutation:
    @strawberry.mutation(
        name="createOAuthClient",
        description="A new client for a third party's system. Administrators only.",
    )
    async def create_oauth_client(
        self,
        info: Info,
        input: Annotated[
            CreateOAuthClientInput, strawberry.argument(description="The mutation's fields.")
        ],
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
        description="A new secret; the old one keeps working for the configured overlap. "
        "Administrators only.",
    )
    async def rotate_oauth_client_secret(
        self,
        info: Info,
        input: Annotated[
            RotateOAuthClientSecretInput, strawberry.argument(description="The mutation's fields.")
        ],
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
        description="Final: no new tokens, and issued ones stop working at once. "
        "Administrators only.",
    )
    async def revoke_oauth_client(
        self,
        info: Info,
        input: Annotated[
            RevokeOAuthClientInput, strawberry.argument(description="The mutation's fields.")
        ],
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


@strawberry.input(description="A new organisation.")
class CreateOrganisationInput:
    name: str = strawberry.field(description="Unique name.")
    kind: OrganisationKind = strawberry.field(description="Its role in the chain.")  # type: ignore[valid-type]
    gln: str | None = strawberry.field(default=None, description="GS1 GLN (13 digits), unique.")


@strawberry.input(description="Changes to an organisation; null leaves a field as it is.")
class UpdateOrganisationInput:
    id: relay.GlobalID = strawberry.field(description="The organisation.")
    name: str | None = strawberry.field(default=None, description="New unique name.")
    kind: OrganisationKind | None = strawberry.field(default=None, description="New kind.")  # type: ignore[valid-type]
    gln: str | None = strawberry.field(default=None, description="New GS1 GLN (13 digits).")


@strawberry.type(description="The result of an organisation mutation.")
class OrganisationPayload:
    organisation: Organisation | None = strawberry.field(
        default=None, description="The organisation; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.input(description="A new location.")
class CreateLocationInput:
    organisation: relay.GlobalID = strawberry.field(description="Whose location it is.")
    code: str = strawberry.field(description="Unique code: 1-32 letters, digits, '-', '_', '.'.")
    name: str = strawberry.field(description="Display name.")
    kind: LocationKind = strawberry.field(description="What it is used for.")  # type: ignore[valid-type]
    parent: relay.GlobalID | None = strawberry.field(
        default=None, description="The location it sits in (same organisation); null: top."
    )
    allow_negative_stock: bool = strawberry.field(
        default=False, description="Whether balances here may go below zero."
    )


@strawberry.input(description="Changes to a location; null leaves a field as it is.")
class UpdateLocationInput:
    id: relay.GlobalID = strawberry.field(description="The location.")
    code: str | None = strawberry.field(default=None, description="New unique code.")
    name: str | None = strawberry.field(default=None, description="New display name.")
    kind: LocationKind | None = strawberry.field(default=None, description="New kind.")  # type: ignore[valid-type]
    parent: relay.GlobalID | None = strawberry.field(
        default=None, description="New parent (same organisation, not below itself)."
    )
    allow_negative_stock: bool | None = strawberry.field(
        default=None, description="Whether balances here may go below zero."
    )
    active: bool | None = strawberry.field(
        default=None, description="False: no new movements here."
    )


@strawberry.type(description="The result of a location mutation.")
class LocationPayload:
    location: Location | None = strawberry.field(
        default=None, description="The location; null when refused."
    )
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


@strawberry.input(description="A new user.")
class CreateUserInput:
    username: str = strawberry.field(description="Unique sign-in name.")
    full_name: str = strawberry.field(description="The name to show.")
    password: str = strawberry.field(description="At least 8 characters; only a hash is kept.")
    roles: list[RoleEnum] = strawberry.field(description="At least one.")  # type: ignore[valid-type]
    organisation: relay.GlobalID | None = strawberry.field(
        default=None, description="Whom they work for; null: network-wide staff."
    )
    locations: list[relay.GlobalID] = strawberry.field(
        default_factory=list,
        description="Explicit scope (of their organisation); empty: the whole organisation. "
        "A nurse needs at least one ward.",
    )


@strawberry.input(description="Changes to a user; null leaves a field as it is.")
class UpdateUserInput:
    id: relay.GlobalID = strawberry.field(description="The user.")
    full_name: str | None = strawberry.field(default=None, description="New display name.")
    password: str | None = strawberry.field(
        default=None, description="New password (at least 8 characters); ends their sessions."
    )
    roles: list[RoleEnum] | None = strawberry.field(default=None, description="New roles.")  # type: ignore[valid-type]
    organisation: relay.GlobalID | None = strawberry.field(
        default=None, description="New organisation."
    )
    locations: list[relay.GlobalID] | None = strawberry.field(
        default=None, description="New explicit scope; empty: the whole organisation."
    )
    active: bool | None = strawberry.field(
        default=None, description="False disables the account and ends its sessions."
    )


@strawberry.type(description="The result of a user mutation.")
class UserPayload:
    user: User | None = strawberry.field(default=None, description="The user; null when refused.")
    errors: list[MutationError] = strawberry.field(
        default_factory=list, description="Why it was refused; empty on success."
    )


async def username_of(info: Info, user_id: int | None) -> str | None:
    """Who did it, as a username (for `*By: String` fields not yet turned into `User`)."""
    return await load_related(info, models.User, user_id, lambda user: user.username)


@strawberry.type
class Mutation(OAuthClientMutation):
    @strawberry.mutation(description="A new organisation. Administrators only.")
    async def create_organisation(
        self,
        info: Info,
        input: Annotated[
            CreateOrganisationInput, strawberry.argument(description="The mutation's fields.")
        ],
    ) -> OrganisationPayload:
        org, errors = await attempt(
            info,
            lambda p: info.context.services.network.create_organisation(
                p, name=input.name, kind=input.kind, gln=input.gln
            ),
        )
        return OrganisationPayload(organisation=org and Organisation.from_model(org), errors=errors)

    @strawberry.mutation(description="Change an organisation. Administrators only.")
    async def update_organisation(
        self,
        info: Info,
        input: Annotated[
            UpdateOrganisationInput, strawberry.argument(description="The mutation's fields.")
        ],
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

    @strawberry.mutation(description="A new location. Administrators only.")
    async def create_location(
        self,
        info: Info,
        input: Annotated[
            CreateLocationInput, strawberry.argument(description="The mutation's fields.")
        ],
    ) -> LocationPayload:
        loc, errors = await attempt(
            info,
            lambda p: info.context.services.network.create_location(
                p,
                organisation_id=decode_id(input.organisation, Organisation, "organisation"),
                code=input.code,
                name=input.name,
                kind=input.kind,
                parent_id=optional_id(input.parent, Location, "parent"),
                allow_negative_stock=input.allow_negative_stock,
            ),
        )
        return LocationPayload(location=loc and Location.from_model(loc), errors=errors)

    @strawberry.mutation(description="Change a location. Administrators only.")
    async def update_location(
        self,
        info: Info,
        input: Annotated[
            UpdateLocationInput, strawberry.argument(description="The mutation's fields.")
        ],
    ) -> LocationPayload:
        loc, errors = await attempt(
            info,
            lambda p: info.context.services.network.update_location(
                p,
                decode_id(input.id, Location, "id"),
                code=input.code,
                name=input.name,
                kind=input.kind,
                parent_id=optional_id(input.parent, Location, "parent"),
                allow_negative_stock=input.allow_negative_stock,
                active=input.active,
            ),
        )
        return LocationPayload(location=loc and Location.from_model(loc), errors=errors)

    @strawberry.mutation(description="A new user. Administrators only.")
    async def create_user(
        self,
        info: Info,
        input: Annotated[
            CreateUserInput, strawberry.argument(description="The mutation's fields.")
        ],
    ) -> UserPayload:
        user, errors = await attempt(
            info,
            lambda p: info.context.services.network.create_user(
                p,
                username=input.username,
                full_name=input.full_name,
                password=input.password,
                roles=input.roles,
                organisation_id=optional_id(input.organisation, Organisation, "organisation"),
                location_ids=[decode_id(x, Location, "locations") for x in input.locations],
            ),
        )
        return UserPayload(user=user and User.from_model(user), errors=errors)

    @strawberry.mutation(description="Change a user. Administrators only.")
    async def update_user(
        self,
        info: Info,
        input: Annotated[
            UpdateUserInput, strawberry.argument(description="The mutation's fields.")
        ],
    ) -> UserPayload:
        locations = input.locations
        user, errors = await attempt(
            info,
            lambda p: info.context.services.network.update_user(
                p,
                decode_id(input.id, User, "id"),
                full_name=input.full_name,
                password=input.password,
                roles=input.roles,
                organisation_id=optional_id(input.organisation, Organisation, "organisation"),
                location_ids=None
                if locations is None
                else [decode_id(x, Location, "locations") for x in locations],
                active=input.active,
            ),
        )
        return UserPayload(user=user and User.from_model(user), errors=errors)

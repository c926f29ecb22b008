"""Org API tokens: issue (the secret is shown once), list, revoke."""

from __future__ import annotations

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth import context_of
from api.common import Cursor, Limit, MinPosition, PathId, Views, command_answer
from api.schemas.common import MessageBody
from api.schemas.tokens import Token, TokenCreate, TokenIssued, TokenList
from commands import tokens as use_cases
from commands.tokens import TokenVerifier
from commands.unit_of_work import CommandRunner
from domain import access
from domain.errors import Forbidden
from domain.token import check_issue, user_of_new_token
from projections import tokens as listing
from projections.pagination import Page, decode_cursor


class TokenController(Controller):
    path = "/v1/orgs/{org_id:str}/tokens"
    tags = ["Tokens"]

    @post("/", opt={"permission": "token:create"}, summary="Issue Token", status_code=201, sync_to_thread=True)
    def issue_token(
        self, request: Request, commands: NamedDependency[CommandRunner], org_id: PathId, data: JSONBody[TokenCreate]
    ) -> Response[TokenIssued]:
        check_issue(data.name, data.role, data.principal_type, data.user_id)
        principal = request.state.principal
        issuer_role = None if principal.org_id is None else principal.role
        if issuer_role is not None and not access.may_issue(issuer_role, data.role):
            raise Forbidden(f"token:create:{data.role}")
        user_id = user_of_new_token(issuer_role, principal.actor.user_id, data.principal_type, data.user_id)
        outcome, secret = use_cases.issue_token(
            commands,
            context_of(request),
            name=data.name,
            role=data.role,
            user_id=user_id,
            principal_type=data.principal_type,
        )
        state = outcome.state
        body = TokenIssued(
            token_id=state.token_id,
            token=secret,
            name=state.name,
            role=state.role,
            user_id=state.user_id,
            principal_type=state.principal_type,
            created_at=state.created_at,
        )
        return command_answer(body, outcome, status_code=201)

    @get("/", opt={"permission": "token:read"}, summary="List Tokens")
    async def list_tokens(
        self,
        views: NamedDependency[Views],
        org_id: PathId,
        limit: Limit = 50,
        cursor: Cursor = None,
        min_position: MinPosition = None,
    ) -> TokenList:
        after = decode_cursor(cursor)
        await views.wait_for([listing.NAME], min_position)
        async with views.connection() as conn:
            total, rows = await listing.list_tokens(conn, org_id, after, limit)
        page = Page(rows, limit, key_of=lambda row: row[0])
        return TokenList(
            total=total,
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            tokens=[
                Token(
                    token_id=t.token_id,
                    name=t.name,
                    role=t.role,
                    user_id=t.user_id,
                    principal_type=t.principal_type,
                    created_at=t.created_at,
                    created_by=t.created_by,
                    revoked_at=t.revoked_at,
                    is_active=t.revoked_at is None,
                )
                for _, t in page.items
            ],
        )

    @delete(
        "/{token_id:str}",
        opt={"permission": "token:delete"},
        summary="Revoke Token",
        status_code=200,
        sync_to_thread=True,
    )
    def revoke_token(
        self,
        request: Request,
        commands: NamedDependency[CommandRunner],
        token_verifier: NamedDependency[TokenVerifier],
        org_id: PathId,
        token_id: PathId,
    ) -> Response[MessageBody]:
        principal = request.state.principal
        issuer_role = None if principal.org_id is None else principal.role
        outcome = use_cases.revoke_token(commands, context_of(request), token_id, issuer_role)
        token_verifier.forget(token_id)
        return command_answer(MessageBody(message="Token revoked"), outcome)

"""Every web route, behind ``web_guard`` (signed-in user, CSRF on writes).

Page packages add their router here, one include line each.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from bulkmail.query_api.web.bulk_email_form import router as bulk_email_form_router
from bulkmail.query_api.web.bulk_email_progress import router as bulk_email_progress_router
from bulkmail.query_api.web.email_accounts import router as email_accounts_router
from bulkmail.query_api.web.email_templates import router as email_templates_router
from bulkmail.query_api.web.leads import router as leads_router
from bulkmail.query_api.web.session import web_guard
from bulkmail.query_api.web.settings_page import router as settings_router
from bulkmail.query_api.web.signin import router as signin_router

web_router = APIRouter(include_in_schema=False, dependencies=[Depends(web_guard)])
web_router.include_router(signin_router)
web_router.include_router(settings_router)
web_router.include_router(leads_router)
web_router.include_router(bulk_email_form_router)
web_router.include_router(bulk_email_progress_router)
web_router.include_router(email_templates_router)
web_router.include_router(email_accounts_router)

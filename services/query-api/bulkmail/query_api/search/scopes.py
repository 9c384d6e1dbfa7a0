"""The field catalogue: which fields each object has, and which objects nest in which.

Lead-level shortcuts to related data (`title:`, `city:`, `emailed_template:`) are the same
handlers as inside the nested clause, wrapped in an EXISTS on the related table. Lead counters and
dates are read from the columns the write path keeps on `leads`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import ColumnElement, String, and_, func, literal_column, or_, true

from bulkmail.query_api.search import ast
from bulkmail.query_api.search.fields import (
    ZERO,
    BoolField,
    ChoiceField,
    Column,
    Cond,
    CountField,
    DateField,
    EmailField,
    Env,
    Field,
    LatestDateField,
    LeadLink,
    Link,
    NumberField,
    PhoneField,
    RelatedField,
    Scope,
    StatusField,
    TemplateField,
    TextField,
    Unmodelled,
    UserField,
    related_exists,
    word_patterns,
    words_match,
)
from bulkmail.shared.models import (
    Address,
    Call,
    Contact,
    ContactEmail,
    ContactPhone,
    EmailActivity,
    Lead,
    LeadActivity,
    Opportunity,
    Task,
)

# Objects Close has that bulkmail does not keep: `sms(...)` and friends are refused by name.
UNMODELLED_OBJECTS = {
    "sms": "SMS messages",
    "sequence_subscription": "sequence subscriptions",
    "sequence": "sequences",
    "status_change": "status changes",
    "note": "notes",
    "meeting": "meetings",
    "custom_activity": "custom activities",
    "notification": "notifications",
}
UNMODELLED_FIELDS = {
    "sms_messages": "SMS messages",
    "sms": "SMS messages",
    "notifications": "notifications",
    "notes": "notes",
    "note": "notes",
    "meetings": "meetings",
    "sequence": "sequences",
    "sequences": "sequences",
}

OPPORTUNITY_STATUSES = {
    "active": "active",
    "won": "won",
    "lost": "lost",
    "on_hold": "on_hold",
    "onhold": "on_hold",
    "hold": "on_hold",
}
CALL_DIRECTIONS = {"inbound": "inbound", "incoming": "inbound", "outbound": "outbound", "outgoing": "outbound"}
EMAIL_DIRECTIONS = {"incoming": "incoming", "inbound": "incoming", "outgoing": "outgoing", "outbound": "outgoing"}
EMAIL_STATUSES = {s: s for s in ("sent", "draft", "inbox", "error")}


def _search_text(env: Env, value: ast.Value) -> Cond:
    # The exact expression of the trigram index in migration 0002, so PostgreSQL can use it.
    spaced = literal_column("' '").concat(Lead.search_text)
    return or_(*(spaced.like(p, escape="\\") for p in word_patterns(value.text)))


def _text_in(*columns: Column) -> Callable[[Env, ast.Value], Cond]:
    def match(env: Env, value: ast.Value) -> Cond:
        return or_(*(words_match(c, value.text) for c in columns))

    return match


def _dict(**fields: Field) -> dict[str, Field]:
    return fields


# --- links: (parent, child) → the condition tying the child rows to the parent row --------------

LEAD_CONTACT = LeadLink(lambda: Contact.lead_id)
LEAD_EMAIL_ADDRESS = LeadLink(lambda: ContactEmail.lead_id)
LEAD_PHONE = LeadLink(lambda: ContactPhone.lead_id)
LEAD_ADDRESS = LeadLink(lambda: Address.lead_id)
LEAD_ACTIVITY = LeadLink(lambda: EmailActivity.lead_id)
LEAD_CALL = LeadLink(lambda: Call.lead_id)
LEAD_TASK = LeadLink(lambda: Task.lead_id)
LEAD_OPPORTUNITY = LeadLink(lambda: Opportunity.lead_id)
CONTACT_EMAIL_ADDRESS = lambda: ContactEmail.contact_id == Contact.id  # noqa: E731
CONTACT_PHONE = lambda: ContactPhone.contact_id == Contact.id  # noqa: E731
ACTIVITY_CONTACT = lambda: Contact.id == EmailActivity.contact_id  # noqa: E731

LINKS: dict[tuple[str, str], Link] = {
    ("lead", "contact"): LEAD_CONTACT,
    ("lead", "email"): LEAD_ACTIVITY,
    ("lead", "call"): LEAD_CALL,
    ("lead", "task"): LEAD_TASK,
    ("lead", "opportunity"): LEAD_OPPORTUNITY,
    ("email", "contact"): ACTIVITY_CONTACT,
}


CONTACT_EMAIL_SCOPE = Scope(
    "email_address", ContactEmail, _dict(address=EmailField(lambda: ContactEmail.email_normalized))
)
CONTACT_PHONE_SCOPE = Scope("phone_number", ContactPhone, _dict(number=PhoneField(lambda: ContactPhone.phone)))
ADDRESS_SCOPE = Scope(
    "address",
    Address,
    _dict(
        address=TextField(lambda: [Address.address_1]),
        city=TextField(lambda: [Address.city]),
        state=TextField(lambda: [Address.state]),
        country=TextField(lambda: [Address.country]),
        zipcode=TextField(lambda: [Address.zipcode]),
        location=TextField(lambda: [Address.address_1, Address.city, Address.state, Address.country, Address.zipcode]),
    ),
)

_contact_email = RelatedField("email_address", "address", CONTACT_EMAIL_ADDRESS)
_contact_phone = RelatedField("phone_number", "number", CONTACT_PHONE)
CONTACT_SCOPE = Scope(
    "contact",
    Contact,
    _dict(
        name=TextField(lambda: [Contact.name]),
        contact_name=TextField(lambda: [Contact.name]),
        title=TextField(lambda: [Contact.title]),
        email=_contact_email,
        email_address=_contact_email,
        phone=_contact_phone,
        phone_number=_contact_phone,
    ),
    text=_text_in(Contact.name, Contact.title),
    has={
        "email_addresses": lambda env: related_exists(env, "email_address", CONTACT_EMAIL_ADDRESS, true()),
        "phone_numbers": lambda env: related_exists(env, "phone_number", CONTACT_PHONE, true()),
    },
)


_email_date = DateField(lambda: EmailActivity.date_sent)
EMAIL_SCOPE = Scope(
    "email",
    EmailActivity,
    _dict(
        template=TemplateField(lambda: EmailActivity.template_id),
        opened=DateField(lambda: EmailActivity.date_opened, yes_no=True),
        date=_email_date,
        sent=_email_date,
        date_sent=_email_date,
        direction=ChoiceField(lambda: EmailActivity.direction, EMAIL_DIRECTIONS),
        status=ChoiceField(lambda: EmailActivity.status, EMAIL_STATUSES),
        subject=TextField(lambda: [EmailActivity.subject]),
        to=EmailField(lambda: func.lower(EmailActivity.to_address)),
        user=UserField(lambda: EmailActivity.user_id),
    ),
    text=_text_in(EmailActivity.subject),
    nested={"contact": "contact"},
)

CALL_SCOPE = Scope(
    "call",
    Call,
    _dict(
        date=DateField(lambda: Call.date),
        duration=CountField(lambda: Call.duration),
        recording_duration=CountField(lambda: Call.recording_duration),
        voicemail_duration=CountField(lambda: Call.voicemail_duration),
        direction=ChoiceField(lambda: Call.direction, CALL_DIRECTIONS),
        user=UserField(lambda: Call.user_id),
    ),
)

_task_text = TextField(lambda: [Task.text])
_task_creator = UserField(lambda: Task.created_by_id)
_task_created = DateField(lambda: Task.created_at)
_task_due = DateField(lambda: Task.date)
_task_complete = BoolField(lambda: Task.is_complete)
TASK_SCOPE = Scope(
    "task",
    Task,
    _dict(
        text=_task_text,
        description=_task_text,
        is_complete=_task_complete,
        complete=_task_complete,
        assigned_to=UserField(lambda: Task.assigned_to_id),
        created_by=_task_creator,
        creator=_task_creator,
        created=_task_created,
        date_created=_task_created,
        # Tasks keep no update time; their last recorded change is the completion, else creation.
        updated=DateField(lambda: func.coalesce(Task.completed_at, Task.created_at)),
        date=_task_due,
        due=_task_due,
        due_date=_task_due,
        completed=DateField(lambda: Task.completed_at),
    ),
    text=_text_in(Task.text),
)

_opp_user = UserField(lambda: Opportunity.user_id)
_opp_created = DateField(lambda: Opportunity.created_at)
OPPORTUNITY_SCOPE = Scope(
    "opportunity",
    Opportunity,
    _dict(
        status=ChoiceField(lambda: Opportunity.status, OPPORTUNITY_STATUSES),
        value=NumberField(lambda: Opportunity.value),
        user=_opp_user,
        user_id=_opp_user,
        owner=_opp_user,
        created=_opp_created,
        date_created=_opp_created,
    ),
)

_lead_name = TextField(lambda: [Lead.name])
_created = DateField(lambda: Lead.created_at)
_updated = DateField(lambda: Lead.updated_at)
_status = StatusField(lambda: Lead.status_id)
_email = RelatedField("email_address", "address", LEAD_EMAIL_ADDRESS)
_phone = RelatedField("phone_number", "number", LEAD_PHONE)
_calls = CountField(lambda: LeadActivity.num_calls)


# A literal, not a parameter, so the partial index ix_email_activities_search_sent applies.
OUTGOING: ColumnElement[str] = literal_column("'outgoing'", String)


def _some_email_sent(env: Env, cond: Callable[[Column], Cond]) -> Cond:
    return related_exists(
        env, "email", LEAD_ACTIVITY, and_(EmailActivity.direction == OUTGOING, cond(EmailActivity.date_sent))
    )


_last_email = LatestDateField(lambda: LeadActivity.last_emailed_at, _some_email_sent)
_last_call = DateField(lambda: Lead.last_called_at)
_opp_status = RelatedField("opportunity", "status", LEAD_OPPORTUNITY)


def _address(part: str) -> RelatedField:
    return RelatedField("address", part, LEAD_ADDRESS)


LEAD_FIELDS: dict[str, Field] = _dict(
    name=_lead_name,
    company=_lead_name,
    lead_name=_lead_name,
    display_name=_lead_name,
    description=TextField(lambda: [Lead.description]),
    url=TextField(lambda: [Lead.url], substring=True),
    status=_status,
    lead_status=_status,
    created=_created,
    date_created=_created,
    updated=_updated,
    date_updated=_updated,
    created_by=UserField(lambda: Lead.created_by_id),
    updated_by=UserField(lambda: Lead.updated_by_id),
    contact_name=RelatedField("contact", "name", LEAD_CONTACT),
    title=RelatedField("contact", "title", LEAD_CONTACT),
    email=_email,
    email_address=_email,
    phone=_phone,
    phone_number=_phone,
    address=_address("address"),
    city=_address("city"),
    state=_address("state"),
    country=_address("country"),
    zipcode=_address("zipcode"),
    zip=_address("zipcode"),
    location=_address("location"),
    contacts=CountField(lambda: Lead.num_contacts),
    addresses=CountField(lambda: Lead.num_addresses),
    email_addresses=CountField(lambda: Lead.num_email_addresses),
    phone_numbers=CountField(lambda: Lead.num_phone_numbers),
    emails=CountField(lambda: LeadActivity.num_emails),
    calls=_calls,
    called=_calls,
    opportunities=CountField(lambda: Lead.num_opportunities),
    tasks=CountField(lambda: Lead.num_tasks),
    activities=CountField(lambda: LeadActivity.num_emails + LeadActivity.num_calls),
    last_email=_last_email,
    last_emailed=_last_email,
    last_call=_last_call,
    last_called=_last_call,
    email_opened=DateField(lambda: Lead.last_email_opened_at, yes_no=True),
    emailed_template=RelatedField("email", "template", LEAD_ACTIVITY),
    opportunity=_opp_status,
    opportunity_status=_opp_status,
    opportunity_user=RelatedField("opportunity", "user", LEAD_OPPORTUNITY),
    # Close's own scripts search opportunities with `user_id:"user_…"` (their owner); on a lead
    # it means the same as opportunity_user.
    user_id=RelatedField("opportunity", "user", LEAD_OPPORTUNITY),
    opportunity_value=RelatedField("opportunity", "value", LEAD_OPPORTUNITY),
    assigned_to=RelatedField("task", "assigned_to", LEAD_TASK),
    **{name: Unmodelled(what) for name, what in UNMODELLED_FIELDS.items()},
)

# has:<plural collection> reads the lead's counter; the literal 0 lets partial indexes apply.
LEAD_HAS = {
    "contacts": lambda env: Lead.num_contacts > ZERO,
    "addresses": lambda env: Lead.num_addresses > ZERO,
    "email_addresses": lambda env: Lead.num_email_addresses > ZERO,
    "emails": lambda env: LeadActivity.num_emails > ZERO,
    "phone_numbers": lambda env: Lead.num_phone_numbers > ZERO,
    "calls": lambda env: LeadActivity.num_calls > ZERO,
    "opportunities": lambda env: Lead.num_opportunities > ZERO,
    "tasks": lambda env: Lead.num_tasks > ZERO,
}

LEAD_SCOPE = Scope(
    "lead",
    Lead,
    LEAD_FIELDS,
    text=_search_text,
    has=LEAD_HAS,
    nested={
        "contact": "contact",
        "contacts": "contact",
        "email": "email",
        "emails": "email",
        "call": "call",
        "calls": "call",
        "task": "task",
        "tasks": "task",
        "opportunity": "opportunity",
        "opportunities": "opportunity",
    },
)

SCOPES: Mapping[str, Scope] = {
    s.name: s
    for s in (
        LEAD_SCOPE,
        CONTACT_SCOPE,
        CONTACT_EMAIL_SCOPE,
        CONTACT_PHONE_SCOPE,
        ADDRESS_SCOPE,
        EMAIL_SCOPE,
        CALL_SCOPE,
        TASK_SCOPE,
        OPPORTUNITY_SCOPE,
    )
}

# `email:*` / `phone:*` at the lead level read the counters, not an EXISTS.
LEAD_STAR = {
    "email": lambda: Lead.num_email_addresses > ZERO,
    "email_address": lambda: Lead.num_email_addresses > ZERO,
    "phone": lambda: Lead.num_phone_numbers > ZERO,
    "phone_number": lambda: Lead.num_phone_numbers > ZERO,
    "contact_name": lambda: Lead.num_contacts > ZERO,
}

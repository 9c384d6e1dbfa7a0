"""Lead payloads, shaped after Close's public API."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bulkmail.shared.addresses import address_problem
from bulkmail.shared.models import Contact, CustomFieldType, Lead, LeadCustomValue


def _check_email(value: str) -> str:
    value = value.strip()
    problem = address_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} is not an address the mailer can deliver to: {problem}")
    return value


# The mailer's own rule (bulkmail.shared.addresses), so nothing stored here is refused at sending.
EmailAddress = Annotated[str, StringConstraints(max_length=320), AfterValidator(_check_email)]
Short = Annotated[str, StringConstraints(max_length=300)]
CustomValue = str | int | float | Decimal | date | datetime | bool | None


class EmailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailAddress
    type: Annotated[str, StringConstraints(max_length=30)] = "office"
    is_unsubscribed: bool = False


class PhoneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: Annotated[str, StringConstraints(min_length=1, max_length=50)]
    type: Annotated[str, StringConstraints(max_length=30)] = "office"


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Short = ""
    title: Short = ""
    emails: list[EmailIn] = Field(default_factory=list, max_length=50)
    phones: list[PhoneIn] = Field(default_factory=list, max_length=50)


class ContactUpdate(BaseModel):
    """``PUT /contact/{id}/``: fields present are changed; ``emails``/``phones`` given replace the lists."""

    model_config = ConfigDict(extra="forbid")
    name: Short | None = None
    title: Short | None = None
    emails: list[EmailIn] | None = Field(default=None, max_length=50)
    phones: list[PhoneIn] | None = Field(default=None, max_length=50)


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address_1: Short = ""
    city: Annotated[str, StringConstraints(max_length=200)] = ""
    state: Annotated[str, StringConstraints(max_length=200)] = ""
    country: Annotated[str, StringConstraints(max_length=100)] = ""
    zipcode: Annotated[str, StringConstraints(max_length=30)] = ""
    label: Annotated[str, StringConstraints(min_length=1, max_length=30)] = "business"  # business, mailing, other


CUSTOM_KEY = "custom."


def _gather_custom(data: Any) -> Any:
    """Close's top-level ``"custom.<Field Name>": value`` keys join the ``custom`` dict (they win)."""
    if not isinstance(data, dict) or not any(isinstance(k, str) and k.startswith(CUSTOM_KEY) for k in data):
        return data
    out = {k: v for k, v in data.items() if not k.startswith(CUSTOM_KEY)}
    custom = out.get("custom") or {}
    if not isinstance(custom, dict):
        return data  # the custom dict's own type error is reported as usual
    out["custom"] = {**custom, **{k[len(CUSTOM_KEY) :]: v for k, v in data.items() if k.startswith(CUSTOM_KEY)}}
    return out


class LeadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Short = ""
    description: Annotated[str, StringConstraints(max_length=20_000)] = ""
    url: Annotated[str, StringConstraints(max_length=500)] = ""
    status: Annotated[str, StringConstraints(max_length=100)] | None = None
    status_id: int | None = None
    custom: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], CustomValue] = Field(
        default_factory=dict
    )
    contacts: list[ContactIn] = Field(default_factory=list, max_length=200)
    addresses: list[AddressIn] = Field(default_factory=list, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _custom_keys(cls, data: Any) -> Any:
        return _gather_custom(data)


class LeadUpdate(BaseModel):
    """Fields present are changed; ``contacts``/``addresses`` given replace the lead's lists."""

    model_config = ConfigDict(extra="forbid")
    name: Short | None = None
    description: Annotated[str, StringConstraints(max_length=20_000)] | None = None
    url: Annotated[str, StringConstraints(max_length=500)] | None = None
    status: Annotated[str, StringConstraints(max_length=100)] | None = None
    status_id: int | None = None
    custom: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], CustomValue] | None = None
    contacts: list[ContactIn] | None = Field(default=None, max_length=200)
    addresses: list[AddressIn] | None = Field(default=None, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _custom_keys(cls, data: Any) -> Any:
        return _gather_custom(data)


class EmailOut(BaseModel):
    email: str
    type: str
    is_unsubscribed: bool


class PhoneOut(BaseModel):
    phone: str
    type: str


class ContactOut(BaseModel):
    id: int
    lead_id: int
    name: str
    title: str
    emails: list[EmailOut]
    phones: list[PhoneOut]


class AddressOut(BaseModel):
    label: str
    address_1: str
    city: str
    state: str
    country: str
    zipcode: str


class LeadOut(BaseModel):
    """Also carries Close's top-level ``custom.<Field Name>`` keys (extra fields), one per value."""

    model_config = ConfigDict(extra="allow")
    id: int
    display_name: str
    name: str
    description: str
    url: str
    status: str | None
    status_id: int | None
    status_label: str | None
    custom: dict[str, CustomValue]
    contacts: list[ContactOut]
    addresses: list[AddressOut]
    date_created: datetime
    date_updated: datetime
    created_by: int | None
    updated_by: int | None


class LeadList(BaseModel):
    data: list[LeadOut]
    has_more: bool
    # With a query: how many leads match. Counting exactly may take too long on a large
    # database; then this is the database's estimate and total_results_approximate is true.
    total_results: int | None = None
    total_results_approximate: bool = False


# -- rows as the API shows them ----------------------------------------------------------------


def custom_out(value: LeadCustomValue) -> CustomValue:
    if value.field.type == CustomFieldType.number and value.value_number is not None:
        number = value.value_number
        return int(number) if number == number.to_integral_value() else float(number)
    if value.field.type == CustomFieldType.date and value.value_date is not None:
        return value.value_text
    return value.value_text


def to_out(lead: Lead) -> LeadOut:
    custom = {v.field.name: custom_out(v) for v in sorted(lead.custom_values, key=lambda v: v.field.name)}
    return LeadOut(
        id=lead.id,
        display_name=lead.display_name,
        name=lead.name,
        description=lead.description,
        url=lead.url,
        status=lead.status.label if lead.status else None,
        status_id=lead.status_id,
        status_label=lead.status.label if lead.status else None,
        custom=custom,
        contacts=[contact_out(c) for c in lead.contacts],
        addresses=[
            AddressOut(
                label=a.label, address_1=a.address_1, city=a.city, state=a.state, country=a.country, zipcode=a.zipcode
            )
            for a in lead.addresses
        ],
        date_created=lead.created_at,
        date_updated=lead.updated_at,
        created_by=lead.created_by_id,
        updated_by=lead.updated_by_id,
        # Close's top-level form of the same values (it keys them by field id; we by name).
        **{f"{CUSTOM_KEY}{name}": value for name, value in custom.items()},
    )


def contact_out(c: Contact) -> ContactOut:
    return ContactOut(
        id=c.id,
        lead_id=c.lead_id,
        name=c.name,
        title=c.title,
        emails=[EmailOut(email=e.email, type=e.type, is_unsubscribed=e.is_unsubscribed) for e in c.emails],
        phones=[PhoneOut(phone=p.phone, type=p.type) for p in c.phones],
    )

"""Lead payloads, shaped after Close's public API."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _check_email(value: str) -> str:
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an email address")
    return value


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


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address_1: Short = ""
    city: Annotated[str, StringConstraints(max_length=200)] = ""
    state: Annotated[str, StringConstraints(max_length=200)] = ""
    country: Annotated[str, StringConstraints(max_length=100)] = ""
    zipcode: Annotated[str, StringConstraints(max_length=30)] = ""


class LeadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Short = ""
    description: Annotated[str, StringConstraints(max_length=20_000)] = ""
    url: Annotated[str, StringConstraints(max_length=500)] = ""
    status: Annotated[str, StringConstraints(max_length=100)] | None = None
    custom: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], CustomValue] = Field(
        default_factory=dict
    )
    contacts: list[ContactIn] = Field(default_factory=list, max_length=200)
    addresses: list[AddressIn] = Field(default_factory=list, max_length=50)


class LeadUpdate(BaseModel):
    """Fields present are changed; ``contacts``/``addresses`` given replace the lead's lists."""

    model_config = ConfigDict(extra="forbid")
    name: Short | None = None
    description: Annotated[str, StringConstraints(max_length=20_000)] | None = None
    url: Annotated[str, StringConstraints(max_length=500)] | None = None
    status: Annotated[str, StringConstraints(max_length=100)] | None = None
    custom: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], CustomValue] | None = None
    contacts: list[ContactIn] | None = Field(default=None, max_length=200)
    addresses: list[AddressIn] | None = Field(default=None, max_length=50)


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
    address_1: str
    city: str
    state: str
    country: str
    zipcode: str


class LeadOut(BaseModel):
    id: int
    display_name: str
    name: str
    description: str
    url: str
    status: str | None
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

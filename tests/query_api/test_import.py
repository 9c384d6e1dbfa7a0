import json

import httpx
import pytest
from sqlalchemy import func, select

from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.counters import refresh_lead_counters
from bulkmail.shared.db import Database
from bulkmail.shared.models import ContactEmail, CustomField, Lead, LeadCustomValue

IMPORT = "/api/v1/lead/import"
NDJSON = {"Content-Type": "application/x-ndjson"}
CSV = {"Content-Type": "text/csv"}


class Importer(httpx.AsyncClient):
    """An API client for a fresh organisation of its own."""

    organization_id: int


@pytest.fixture
async def client(app, make_tenant):
    tenant = await make_tenant("Importer")
    async with Importer(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    ) as c:
        c.organization_id = tenant.organization_id
        yield c


def _ndjson(*leads: object) -> bytes:
    return "\n".join(json.dumps(lead) for lead in leads).encode()


LEAD = {
    "name": "Acme Corp",
    "url": "https://acme.example",
    "status": "potential",
    "custom": {"Employees": 120, "Renewal Date": "2027-01-31", "Industry": "Retail"},
    "contacts": [
        {
            "name": "Jane Doe",
            "title": "CEO",
            "emails": [
                {"email": "Jane@Acme.example"},
                {"email": "jd@home.example", "type": "home", "is_unsubscribed": True},
            ],
            "phones": [{"phone": "+15550100", "type": "mobile"}],
        },
        {"name": "Bob Roe", "title": "CTO"},
    ],
    "addresses": [{"city": "Berlin", "country": "DE", "zipcode": "10115"}],
}


async def _leads(database: Database, org: int) -> list[Lead]:
    async with database.session() as session:
        return list(await session.scalars(select(Lead).where(Lead.organization_id == org).order_by(Lead.id)))


async def test_ndjson_leads_are_imported_with_contacts_custom_fields_and_counters(client, database):
    body = _ndjson(LEAD, {"name": "Solo"}, {"name": "Beta", "contacts": [{"emails": [{"email": "x@beta.example"}]}]})
    response = await client.post(IMPORT, content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["leads"], result["contacts"], result["contact_emails"], result["contact_phones"]) == (3, 3, 3, 1)
    assert sorted(result["custom_fields_created"]) == ["Employees", "Industry", "Renewal Date"]

    leads = await _leads(database, client.organization_id)
    assert [lead.name for lead in leads] == ["Acme Corp", "Solo", "Beta"]
    acme = leads[0]
    assert (acme.num_contacts, acme.num_email_addresses, acme.num_phone_numbers, acme.num_addresses) == (2, 2, 1, 1)
    assert acme.status_id is not None and "retail" in acme.search_text and "jane" in acme.search_text
    async with database.session() as session:
        types = dict(
            (
                await session.execute(
                    select(CustomField.name, CustomField.type).where(
                        CustomField.organization_id == client.organization_id
                    )
                )
            ).all()
        )
        assert types == {"Employees": "number", "Renewal Date": "date", "Industry": "text"}
        assert (
            await session.scalar(
                select(ContactEmail.email_normalized).where(ContactEmail.lead_id == acme.id, ContactEmail.position == 0)
            )
            == "jane@acme.example"
        )
        snapshot = [(lead.id, lead.search_text, lead.num_contacts, lead.num_email_addresses) for lead in leads]
        await refresh_lead_counters(session, [lead.id for lead in leads])
    refreshed = await _leads(database, client.organization_id)
    assert [(lead.id, lead.search_text, lead.num_contacts, lead.num_email_addresses) for lead in refreshed] == snapshot


async def test_csv_rows_become_leads_with_one_contact_and_address(client, database):
    csv = (
        "\ufeffname,url,description,status,contact_name,contact_title,email,phone,city,state,country,zipcode,custom.Industry\r\n"
        'Gamma LLC,https://gamma.example,"Two lines,\nof description",Qualified,Ann Lee,VP Sales,ann@gamma.example,'
        "+15550101,Austin,TX,US,73301,Software\r\n"
        "Delta,,,,,,,,,,,,\r\n"
    )
    response = await client.post(IMPORT, content=csv.encode(), headers=CSV)
    assert response.status_code == 200, response.text
    assert response.json()["leads"] == 2
    gamma, delta = await _leads(database, client.organization_id)
    assert gamma.description == "Two lines,\nof description"
    assert (gamma.num_contacts, gamma.num_email_addresses, gamma.num_addresses) == (1, 1, 1)
    assert "austin" in gamma.search_text and "software" in gamma.search_text
    assert (delta.name, delta.num_contacts) == ("Delta", 0)


async def test_a_bad_line_refuses_the_whole_import_before_any_batch_is_written(settings, database, make_tenant):
    tenant = await make_tenant("Batched")
    broker = MemoryBroker(settings.broker_namespace)
    app = create_app(settings.model_copy(update={"import_batch_leads": 2}), database=database, broker=broker)
    client = Importer(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )
    client.organization_id = tenant.organization_id
    good = [{"name": f"Lead {i}", "contacts": [{"emails": [{"email": f"l{i}@x.example"}]}]} for i in range(5)]
    bad = {"name": "Broken", "contacts": [{"emails": [{"email": "not-an-address"}]}]}
    response = await client.post(IMPORT, content=_ndjson(*good, bad), headers=NDJSON)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid import" and body["line"] == 6
    assert body["detail"].startswith("line 6: contacts[0].emails[0].email")
    assert await _leads(database, client.organization_id) == []
    async with database.session() as session:
        count = select(func.count()).where(LeadCustomValue.organization_id == client.organization_id)
        assert await session.scalar(count) == 0
    await client.aclose()
    await broker.close()


@pytest.mark.parametrize(
    ("body", "headers", "detail"),
    [
        (b'{"name": "A"}\n{"name": ', NDJSON, "line 2: malformed JSON at column 10"),
        (_ndjson({"name": "A", "status": "No Such Status"}), NDJSON, "line 1: unknown lead status 'No Such Status'"),
        (_ndjson({"name": "A", "custom": {"Employees": 5}}, {"name": "B", "custom": {"Employees": "many"}}), NDJSON,
         "line 2: custom field 'Employees' holds numbers"),
        (_ndjson({"name": "A", "colour": "red"}), NDJSON, "line 1: colour: Extra inputs are not permitted"),
        (b"name,fax\nA,1\n", CSV, "line 1: unknown column 'fax'"),
        (b"name,url\nA\n", CSV, "line 2: 1 cells, but the header has 2 columns"),
    ],
)  # fmt: skip
async def test_bad_input_is_refused_with_its_line_number(client, database, body, headers, detail):
    response = await client.post(IMPORT, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(detail)
    assert await _leads(database, client.organization_id) == []


async def test_other_content_types_are_refused(client):
    response = await client.post(IMPORT, content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 415


async def test_importing_needs_an_api_key(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as anonymous:
        response = await anonymous.post(IMPORT, content=_ndjson({"name": "A"}), headers=NDJSON)
    assert response.status_code == 401


def test_the_openapi_document_describes_both_body_formats(app):
    body = app.openapi()["paths"][IMPORT]["post"]["requestBody"]["content"]
    assert set(body) == {"application/x-ndjson", "text/csv"}

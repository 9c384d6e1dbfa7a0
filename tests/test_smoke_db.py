from sqlalchemy import select

from bulkmail.shared.models import Organization


async def test_an_organization_round_trips_on_each_backend(database):
    async with database.session() as session:
        org = Organization(name="Acme")
        session.add(org)
        await session.flush()
        org_id = org.id
    async with database.session() as session:
        assert (await session.scalar(select(Organization.name).where(Organization.id == org_id))) == "Acme"

"""Word lists for the synthetic CRM (``bulkmail.shared.seed``): small, fixed, no Faker needed."""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.split()


ORGANIZATION_NAME = "Demo Sales Co"
ORGANIZATION_DOMAIN = "demosales.example"

USERS = [("Alice", "Martin"), ("Bob", "Nguyen"), ("Carla", "Rossi"), ("Dev", "Patel"), ("Erin", "Walsh")]

# (label, weight): how often leads get the status.
LEAD_STATUSES = [("Potential", 40), ("Bad Fit", 10), ("Qualified", 25), ("Customer", 15), ("Interested", 10)]

CUSTOM_FIELDS = [("Lead Source", "text"), ("Employees", "number"), ("Renewal Date", "date"), ("Industry", "choices")]

TEMPLATES = [
    ("Intro", "Quick intro from Demo Sales Co", "<p>Hi {{ contact.first_name }},</p><p>Quick intro...</p>"),
    ("Follow-up", "Following up", "<p>Hi {{ contact.first_name }}, just following up on my last note.</p>"),
    ("Demo invite", "A 20-minute demo for {{ lead.display_name }}?", "<p>Would a short demo help?</p>"),
    ("Pricing", "Pricing for {{ lead.display_name }}", "<p>Here is our pricing, as promised.</p>"),
    ("Check-in", "Checking in", "<p>How are things going at {{ lead.display_name }}?</p>"),
]

FIRST_NAMES = _words(
    """
    James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara
    Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony
    Betty Mark Sandra Steven Ashley Paul Emily Andrew Kimberly Joshua Donna Kevin Michelle Brian
    Carol George Amanda Timothy Melissa Ronald Deborah Jason Stephanie Ryan Rebecca Jacob Laura
    Gary Sharon Nicholas Cynthia Eric Kathleen Jonathan Amy Sofia Mateo Yuki Priya Chen Olga
    Ahmed Fatima
    """
)
LAST_NAMES = _words(
    """
    Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
    Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris
    Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill
    Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Kowalski
    Schmidt Tanaka Kim Singh Okafor Dubois Rossi Jensen Novak
    """
)
TITLES = [
    "CEO", "CTO", "CFO", "COO", "VP Sales", "VP Marketing", "Head of Growth", "Sales Manager",
    "Account Executive", "Marketing Manager", "Founder", "Co-Founder", "Operations Manager",
    "Office Manager", "Engineering Manager", "Purchasing Manager", "",
]  # fmt: skip

COMPANY_FIRST = _words(
    """
    Acme Blue Bright Summit Pioneer Atlas Northern Silver Red Green Golden Rapid Cedar Iron
    Harbor Quantum Vertex Apex Nova Polar Crescent Granite Maple Orbit Prime Swift Urban Vital
    Zenith Echo
    """
)
COMPANY_SECOND = _words(
    """
    Widgets Labs Systems Logistics Analytics Foods Health Energy Robotics Media Software Capital
    Designs Dynamics Networks Solutions Partners Works Supply Motors Cloud Studio Consulting
    Ventures
    """
)
COMPANY_KIND = ["Inc", "LLC", "Ltd", "GmbH", "Corp", "Co", "Group", "SA"]
TLDS = ["com", "com", "com", "io", "co", "net", "de", "fr", "co.uk"]
FREE_MAIL = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "proton.me"]
PHONE_TYPES = ["office", "mobile", "mobile", "direct"]

DESCRIPTIONS = [
    "",
    "Met at the spring trade show.",
    "Inbound from the pricing page.",
    "Referred by an existing customer.",
    "Expanding to a second warehouse next year.",
    "Evaluating three vendors, decision in Q3.",
    "Budget approved, waiting on legal.",
    "Fast-growing team, hiring in sales.",
    "Long sales cycle; procurement heavy.",
    "Uses a competitor today, contract ends soon.",
    "Asked for a demo of the reporting features.",
    "Small team, price sensitive.",
]

# (city, state, country, zipcode)
CITIES = [
    ("New York", "NY", "US", "10001"), ("San Francisco", "CA", "US", "94103"),
    ("Austin", "TX", "US", "73301"), ("Chicago", "IL", "US", "60601"), ("Seattle", "WA", "US", "98101"),
    ("Boston", "MA", "US", "02108"), ("Denver", "CO", "US", "80202"), ("Miami", "FL", "US", "33101"),
    ("Atlanta", "GA", "US", "30301"), ("Portland", "OR", "US", "97201"),
    ("Toronto", "ON", "CA", "M5H 2N2"), ("Vancouver", "BC", "CA", "V6B 1A1"),
    ("London", "", "GB", "EC1A 1BB"), ("Manchester", "", "GB", "M1 1AE"),
    ("Berlin", "", "DE", "10115"), ("Munich", "Bavaria", "DE", "80331"), ("Paris", "", "FR", "75001"),
    ("Lyon", "", "FR", "69001"), ("Amsterdam", "", "NL", "1012"), ("Madrid", "", "ES", "28001"),
    ("Barcelona", "", "ES", "08001"), ("Milan", "", "IT", "20121"), ("Stockholm", "", "SE", "111 20"),
    ("Warsaw", "", "PL", "00-001"), ("Dublin", "", "IE", "D01"), ("Sydney", "NSW", "AU", "2000"),
    ("Melbourne", "VIC", "AU", "3000"), ("Singapore", "", "SG", "018956"), ("Tokyo", "", "JP", "100-0001"),
    ("São Paulo", "SP", "BR", "01000-000"), ("Mexico City", "CDMX", "MX", "06000"),
]  # fmt: skip

STREETS = [
    "Main Street", "Market Street", "High Street", "Broadway", "Park Avenue", "Elm Street",
    "Harbor Road", "Station Road", "Mill Lane", "King Street", "Church Street", "Lake View Drive",
]  # fmt: skip

LEAD_SOURCES = ["Website", "Referral", "Cold Call", "Trade Show", "LinkedIn", "Webinar", "Partner"]
INDUSTRIES = [
    "Software", "Manufacturing", "Retail", "Healthcare", "Finance", "Logistics", "Education",
    "Real Estate", "Media", "Hospitality",
]  # fmt: skip
EMPLOYEE_COUNTS = [5, 10, 25, 50, 100, 250, 500, 1000, 5000]

# Weights for 0, 1, 2, ... of each kind per lead.
CONTACT_WEIGHTS = (10, 45, 25, 12, 8)
OPPORTUNITY_WEIGHTS = (65, 25, 10)
CALL_WEIGHTS = (50, 25, 12, 8, 5)
OPPORTUNITY_STATUSES = ["active"] * 8 + ["won"] * 5 + ["lost"] * 6 + ["on_hold"]

TASK_TEXTS = [
    "Call back about pricing", "Send contract", "Follow up after demo", "Check renewal date",
    "Intro to the CTO", "Send case study", "Confirm budget", "Schedule onboarding",
]  # fmt: skip

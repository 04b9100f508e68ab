"""The console's route groups: each module builds an APIRouter over one shared ``Console`` context."""

"""einspace's fundamental operations (catalog row S57) and the common extras.
Importing the package registers every module's ops."""
from archgram.registry import import_submodules

import_submodules(__name__)

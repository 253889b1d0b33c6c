//! The served OpenAPI document checked against the server by schemathesis (PyPI),
//! from the test venv (`scripts/test.sh` installs it): with an admin token, every
//! operation with generated input (a bounded number of examples), and no answer may be
//! a 5xx or differ from the document.

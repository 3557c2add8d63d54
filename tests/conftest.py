import os

# scikit-learn's check_array_api_input is skipped unless SciPy's array API support is
# switched on before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

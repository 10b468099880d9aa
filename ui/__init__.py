"""Shared Streamlit helpers for the pages (the no-traceback guard, cached store access, formatting, charts).

Kept outside app_pages/ so that folder holds only the pages themselves.
"""

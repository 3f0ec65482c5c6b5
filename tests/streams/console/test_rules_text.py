"""A small valid rules file for the console tests."""

RULES = """[[receivers]]
name = "ops-hook"
webhook_url = "http://127.0.0.1:9/hook"

[[routes]]
receiver = "ops-hook"
group_by = ["region"]
group_wait = "30s"
"""

"""Quality audits of SLM answers against a reference LLM, a pairwise judge, and guardrails."""

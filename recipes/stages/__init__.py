"""The stages of a run: the stage table (``table``), the runner that plans, dispatches and
resumes them (``runner``), one module per kind of stage, and the one reader of what a run
wrote (``results``)."""

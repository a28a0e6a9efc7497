"""What is in a text: token counts and cuts, and the checks a call's texts pass first."""

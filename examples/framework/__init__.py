"""A FastAPI app served by towpath twice, unchanged: in-process and hosted in workers."""

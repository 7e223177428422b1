"""Publishing: approved variants written back to the store product their photo came from.

The doors (pages and API in product_studio/web, the CLI, the Celery task in tasks/pipeline.py)
call into this package; it imports none of them, nor Celery: its functions return the Steps to
enqueue. Importing the package imports none of its modules.

    base.py       the Publisher interface one class per platform implements; what is uploaded and
                  what a product's images read back as; the errors (Rejected, Throttled)
    marks.py      the mark every upload carries (alt text and file name): "ps-<variant id>-<render>"
    http.py       one store API's HTTP client: timeouts, rate limits honoured, 5xx retried where safe
    shopify.py    Shopify's GraphQL Admin API: staged upload, productUpdate media, READY, reorder
    woocommerce.py  WooCommerce's REST API v3 (+ WordPress's media library): the images list
    bigcommerce.py  BigCommerce's catalog API v3: product images (multipart image_file)
    records.py    the publications and job_products tables: recorded before, settled by conditional
                  updates (like variants), leased while a worker publishes
    service.py    what the doors call (publish a variant or a job, after a review, after a render)
                  and the unit the task runs (claim, read back, upload once, settle)
    recognise.py  which images on a product Product Studio put there (webhook intake makes no job)
"""

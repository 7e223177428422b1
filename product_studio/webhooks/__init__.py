"""Webhook intake's core: store platforms' deliveries verified, recorded, and turned into jobs.

The doors (the receivers in product_studio/web/webhooks.py, the Celery tasks in tasks/intake.py)
call into this package; it imports neither of them, nor Celery: the receivers hand the recorder a
`publish` function, and intake returns the jobs' steps for the task to enqueue. Importing the
package imports none of its modules (the web process takes only what the receivers need).

    platforms.py    what each platform sends: signature checks, claims and payload parsers (PLATFORMS)
    stores.py       the stores that may send webhooks: settings and the stores file
    bigcommerce.py  the catalog API client that reads a BigCommerce product and its images
    deliveries.py   delivery records and product states: the database operations
    recorder.py     group commit: one writer thread records the receivers' deliveries in batches
    intake.py       one recorded delivery -> jobs for its product's new or changed images
"""

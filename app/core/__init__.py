"""What every area needs and no area owns: database bases, tenant context, unit of work, jobs, errors, time.

`app.core` never imports an area package.
"""

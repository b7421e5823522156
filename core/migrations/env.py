"""Alembic environment: runs on the engine radpair hands over (see core.db.upgrade)."""

from alembic import context

from radpair.core.models import Base

engine = context.config.attributes["connection_engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

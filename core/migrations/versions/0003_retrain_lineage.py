"""retrain: labels, retrain runs (also the cross-process lock), model versions, held-out studies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 01:13:18.515700
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=300), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_labels_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_study_uid'), ['study_uid'], unique=False)
        batch_op.create_index('ux_labels_key', ['study_uid', 'accession_number', 'patient_id'], unique=True)

    op.create_table('retrain_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('owner', sa.String(length=100), nullable=False),
    sa.Column('active', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('snapshot_size', sa.Integer(), nullable=False),
    sa.Column('new_pairs', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('active')
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('parent_pk', sa.Integer(), nullable=True),
    sa.Column('retrain_run_pk', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('candidate', 'serving', 'rejected', 'retired', name='modelstatus', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('run_config', sa.Text(), nullable=False),
    sa.Column('data_snapshot', sa.Text(), nullable=False),
    sa.Column('metrics', sa.Text(), nullable=False),
    sa.Column('run_dir', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('promoted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['parent_pk'], ['model_versions.id'], ),
    sa.ForeignKeyConstraint(['retrain_run_pk'], ['retrain_runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_versions_retrain_run_pk'), ['retrain_run_pk'], unique=False)
        batch_op.create_index('ux_model_versions_name_version', ['model_name', 'version'], unique=True)

    op.create_table('held_out_studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_pk', sa.Integer(), nullable=False),
    sa.Column('retrain_run_pk', sa.Integer(), nullable=False),
    sa.Column('chosen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['retrain_run_pk'], ['retrain_runs.id'], ),
    sa.ForeignKeyConstraint(['study_pk'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_pk')
    )


def downgrade() -> None:
    op.drop_table('held_out_studies')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index('ux_model_versions_name_version')
        batch_op.drop_index(batch_op.f('ix_model_versions_retrain_run_pk'))

    op.drop_table('model_versions')
    op.drop_table('retrain_runs')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index('ux_labels_key')
        batch_op.drop_index(batch_op.f('ix_labels_study_uid'))
        batch_op.drop_index(batch_op.f('ix_labels_accession_number'))

    op.drop_table('labels')

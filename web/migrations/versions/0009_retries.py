"""retries: schedules' retries setting, and each run machine's attempts

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retries', sa.JSON(), nullable=True))
    with op.batch_alter_table('run_machines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('run_machines', schema=None) as batch_op:
        batch_op.drop_column('attempts')
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_column('retries')

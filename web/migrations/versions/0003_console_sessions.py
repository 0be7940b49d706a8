"""console_sessions: web console sign-ins kept on the server, so signing out ends a session

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('console_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sessions_token_id'), ['token_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_sessions_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_expires_at'))
        batch_op.drop_index(batch_op.f('ix_console_sessions_token_id'))
    op.drop_table('console_sessions')

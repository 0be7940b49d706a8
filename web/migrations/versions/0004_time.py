"""time: calendars, schedules' exclude_calendars, pause, skip_next and jitter

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('calendars',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('org_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('entries', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('org_id', 'name')
    )
    with op.batch_alter_table('calendars', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calendars_org_id'), ['org_id'], unique=False)

    op.create_table('schedule_calendars',
    sa.Column('schedule_id', sa.String(length=32), nullable=False),
    sa.Column('calendar_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['calendar_id'], ['calendars.id'], ),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('schedule_id', 'calendar_id')
    )
    with op.batch_alter_table('schedule_calendars', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_schedule_calendars_calendar_id'), ['calendar_id'], unique=False)

    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exclude_calendars', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('jitter', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('paused_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('pause_note', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('skip_next', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_column('skip_next')
        batch_op.drop_column('pause_note')
        batch_op.drop_column('paused_until')
        batch_op.drop_column('paused_at')
        batch_op.drop_column('jitter')
        batch_op.drop_column('exclude_calendars')

    with op.batch_alter_table('schedule_calendars', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schedule_calendars_calendar_id'))

    op.drop_table('schedule_calendars')
    with op.batch_alter_table('calendars', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calendars_org_id'))

    op.drop_table('calendars')
